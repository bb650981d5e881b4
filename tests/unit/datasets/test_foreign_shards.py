"""Shards prismlab did not write, where users already have them: written by `webdataset.ShardWriter`
(ImageNet style), laid out as img2dataset writes them, made with `tar -C dir .`, behind a brace
pattern, a loopback HTTP server (one that drops connections too) and a `pipe:` command; indexed
once with `prismlab shards index`, then streamed and trained on as they are."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from prismlab.cli import main
from prismlab.datasets.format.manifest import read_manifest
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.loader import ShardLoader

from tests.helpers import REPO
from tests.helpers.image_patterns import PATTERNS, pattern_image
from tests.helpers.shard_sets import jpeg

PER_SHARD = 30


def imagenet_style(folder: Path, shards: int = 3, seed: int = 0) -> list[tuple[str, int]]:
    """`webdataset.ShardWriter` shards of (`__key__`, `.jpg`, `.cls`); returns (key, label) in order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    with wds.ShardWriter(str(folder / "train-%06d.tar"), maxcount=PER_SHARD, verbose=0) as sink:
        for i in range(shards * PER_SHARD):
            label = i % len(PATTERNS)
            key = f"n{label:08d}_{i:05d}"
            sink.write({"__key__": key, "jpg": jpeg(pattern_image(PATTERNS[label], rng)), "cls": label})
            written.append((key, label))
    return written


def img2dataset_style(folder: Path, shards: int = 2, seed: int = 1) -> None:
    """`{00000..}.tar` with `.jpg`, `.txt` and `.json` (caption, url, the class name in `label`), no `.cls`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in range(shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as sink:
            for i in range(PER_SHARD):
                kind = PATTERNS[(s * PER_SHARD + i) % len(PATTERNS)]
                key = f"{s:05d}{i:04d}"
                sink.write(
                    {
                        "__key__": key,
                        "jpg": jpeg(pattern_image(kind, rng)),
                        "txt": f"{kind} stripes",
                        "json": {
                            "url": f"http://example.com/{key}.jpg",
                            "caption": f"{kind} stripes",
                            "label": kind,
                            "status": "success",
                            "key": key,
                        },
                    }
                )


def index(source: str, out: Path, *extra: str) -> None:
    assert main(["shards", "index", source, "--out", str(out), *extra]) == 0


def loader(out: Path, **data) -> ShardLoader:
    """One pass over the train split in shard order; keyword arguments are DataConfig fields."""
    settings = {"batch_size": 8, "num_workers": 0} | data
    return ShardLoader(DataConfig(shards=str(out), **settings), "train", train=False, rank=0, world_size=1)


def labels_of(out: Path, **kwargs) -> list[int]:
    return [label for batch in loader(out, **kwargs) for label in batch.labels[batch.valid].tolist()]


def test_webdataset_shardwriter_shards_index_and_stream_like_webdataset(tmp_path):
    written = imagenet_style(tmp_path / "wds")
    index(str(tmp_path / "wds"), tmp_path / "index")
    manifest = read_manifest(tmp_path / "index", "train")
    assert manifest.samples == 90 and [s.samples for s in manifest.shards] == [30, 30, 30]
    assert manifest.label == "cls" and manifest.class_names == ["0", "1", "2"]
    assert manifest.image_size == [16, 16] and manifest.sizes == {"16x16": 90} and manifest.channels == ["R", "G", "B"]
    assert all(Path(s.url).is_absolute() and len(s.sha256) == 64 for s in manifest.shards)
    upstream = [
        (s["__key__"], int(s["cls"]))
        for s in wds.WebDataset(sorted(str(p) for p in (tmp_path / "wds").glob("*.tar")), shardshuffle=False)
    ]
    assert upstream == written
    assert labels_of(tmp_path / "index") == [label for _, label in written]


def test_training_on_indexed_shards(tmp_path):
    imagenet_style(tmp_path / "wds", shards=4)
    index(f"{tmp_path}/wds/train-{{000000..000002}}.tar", tmp_path / "index")  # a brace pattern
    index(str(tmp_path / "wds" / "train-000003.tar"), tmp_path / "index", "--split", "val")
    info = json.loads((tmp_path / "index" / "_info.json").read_text())  # the timm `wds/` split info
    assert info["splits"]["train"]["num_samples"] == 90 and info["splits"]["val"]["shard_lengths"] == [30]
    assert (
        main(
            [
                "train",
                str(REPO / "configs" / "clock_demo.yaml"),
                "task.name=classify",
                f"data.shards={tmp_path / 'index'}",
                f"run.out_dir={tmp_path}",
                "run.name=t",
                "wandb.mode=disabled",
                "train.epochs=2",
                "train.steps_per_epoch=10",
                "data.batch_size=16",
                "model.name=cnn",
                "model.widths=[8,16]",
                "optim.warmup_steps=0",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["samples"] == 30 and summary["accuracy"] > 0.5


def test_img2dataset_layout_with_labels_from_json(tmp_path, capsys):
    img2dataset_style(tmp_path / "img2")
    index(f"{tmp_path}/img2/{{00000..00001}}.tar", tmp_path / "index", "--label", "json.label")
    manifest = read_manifest(tmp_path / "index", "train")
    assert manifest.samples == 60 and manifest.class_names == sorted(PATTERNS) and manifest.label == "json.label"
    labels = labels_of(tmp_path / "index")
    assert labels == [sorted(PATTERNS).index(PATTERNS[i % 3]) for i in range(60)]
    index(str(tmp_path / "img2"), tmp_path / "unlabelled")  # no .cls: indexed for generative tasks
    assert read_manifest(tmp_path / "unlabelled", "train").label == "none"


def test_tar_made_with_tar_c_dot_groups_like_webdataset(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(300):
        (folder / f"{i:06d}.jpg").write_bytes(jpeg(pattern_image(PATTERNS[i % 3], rng)))
        (folder / f"{i:06d}.cls").write_text(str(i % 3))
    subprocess.run(["tar", "--sort=name", "-cf", str(tmp_path / "dot.tar"), "-C", str(folder), "."], check=True)
    assert sum(1 for _ in wds.WebDataset(str(tmp_path / "dot.tar"), shardshuffle=False)) == 300  # keys `./000000`
    index(str(tmp_path / "dot.tar"), tmp_path / "index")
    assert read_manifest(tmp_path / "index", "train").samples == 300
    assert sorted(labels_of(tmp_path / "index", batch_size=64)) == sorted(i % 3 for i in range(300))


def test_pipe_command_shards(tmp_path):
    imagenet_style(tmp_path / "wds", shards=2)
    index(
        f"pipe:cat {tmp_path}/wds/train-{{000000..000001}}.tar",
        tmp_path / "index",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert [s.url for s in read_manifest(tmp_path / "index", "train").shards][0].startswith("pipe:cat ")
    assert labels_of(tmp_path / "index", cache_dir=str(tmp_path / "cache2")) == [i % 3 for i in range(60)]


class ShardServer:
    """A loopback HTTP server (the stdlib's, with Range support added) that can drop the connection
    half-way through the first `drops` responses of each shard."""

    def __init__(self, root: Path, drops: int = 0):
        self.root, self.drops, self.served, self.ranges = root, drops, {}, []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                if start:
                    server.ranges.append((path.name, start))
                attempt = server.served[path.name] = server.served.get(path.name, 0) + 1
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if attempt <= server.drops:
                    self.wfile.write(body[: len(body) // 2])  # then hang up mid-shard
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.mark.parametrize("drops", [0, 2])
def test_http_shards_with_dropped_connections(tmp_path, drops):
    imagenet_style(tmp_path / "wds", shards=2)
    server = ShardServer(tmp_path / "wds", drops=drops)
    try:
        index(f"{server.url}/train-{{000000..000001}}.tar", tmp_path / "index", "--cache-dir", str(tmp_path / "c1"))
        assert labels_of(tmp_path / "index", cache_dir=str(tmp_path / "c2"), num_workers=2) == [
            i % 3 for i in range(60)
        ]
    finally:
        server.close()
    if drops:  # each broken download continued where it stopped, with a Range request
        assert server.ranges and all(start > 0 for _, start in server.ranges)


def test_unreachable_http_shard_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    from prismlab.datasets.format import shard_io

    monkeypatch.setattr(shard_io, "BACKOFF_S", 0.01)
    imagenet_style(tmp_path / "wds", shards=1)
    server = ShardServer(tmp_path / "wds", drops=100)
    try:
        assert (
            main(
                [
                    "shards",
                    "index",
                    f"{server.url}/train-000000.tar",
                    "--out",
                    str(tmp_path / "index"),
                    "--cache-dir",
                    str(tmp_path / "c"),
                ]
            )
            == 1
        )
    finally:
        server.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train-000000.tar stayed unreachable after 5 retries" in err[0]


def test_missing_labels_are_named_or_skipped_and_counted(tmp_path):
    folder = tmp_path / "wds"
    folder.mkdir()
    rng = np.random.default_rng(3)
    with wds.TarWriter(str(folder / "train-000000.tar")) as sink:
        for i in range(40):
            sample = {"__key__": f"s{i:03d}", "jpg": jpeg(pattern_image(PATTERNS[0], rng))}
            if i != 17:
                sample["cls"] = 0
            sink.write(sample)
    index(str(folder), tmp_path / "index", "--label", "cls")
    with pytest.raises(
        Exception, match=r"sample 's017' of shard .*train-000000.tar: no .cls member .*max_incomplete_fraction"
    ):
        labels_of(tmp_path / "index")
    batches = list(loader(tmp_path / "index", max_incomplete_fraction=0.05))
    assert sum(b.corrupt for b in batches) == 1 and sum(len(b.labels) for b in batches) == 39


def test_image_sizes_mixed_and_non_square(tmp_path, capsys):
    for name, sizes in (("mixed", [(16, 16), (20, 24)]), ("tall", [(48, 40)])):
        for kind in PATTERNS:
            folder = tmp_path / name / kind
            folder.mkdir(parents=True)
            for i in range(6):
                h, w = sizes[i % len(sizes)]
                Image.fromarray(np.full((h, w, 3), 40 * PATTERNS.index(kind), np.uint8)).save(folder / f"{i}.png")
        assert (
            main(["shards", str(tmp_path / name), "--out", str(tmp_path / f"{name}-shards"), "--val-fraction", "0.2"])
            == 0
        )
    out = capsys.readouterr().out
    assert "2 sizes (16x16 x" in out and "all 48x40" in out
    args = [
        "train",
        str(REPO / "configs" / "clock_demo.yaml"),
        "task.name=classify",
        f"run.out_dir={tmp_path}",
        "wandb.mode=disabled",
        "train.epochs=1",
        "train.steps_per_epoch=2",
        "data.batch_size=4",
        "model.widths=[8,16]",
    ]
    assert main([*args, f"data.shards={tmp_path / 'mixed-shards'}", "run.name=m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "have 2 sizes (16x16: 7, 20x24: 7)" in err[0] and "data.resize" in err[0]
    assert main([*args, f"data.shards={tmp_path / 'mixed-shards'}", "run.name=m", "data.resize=16"]) == 0
    assert main([*args, f"data.shards={tmp_path / 'tall-shards'}", "run.name=tall"]) == 0
    payload = torch.load(tmp_path / "tall" / "checkpoints" / "last.pt", weights_only=False)
    assert payload["data"]["image_size"] == [48, 40]


def test_missing_val_split_names_the_flag_that_makes_it(tmp_path, capsys):
    imagenet_style(tmp_path / "wds", shards=1)
    index(str(tmp_path / "wds"), tmp_path / "index")
    assert (
        main(
            [
                "train",
                str(REPO / "configs" / "clock_demo.yaml"),
                "task.name=classify",
                f"data.shards={tmp_path / 'index'}",
                f"run.out_dir={tmp_path}",
                "wandb.mode=disabled",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "no 'val' split" in err and "--val-fraction" in err
    assert (
        main(
            [
                "train",
                str(REPO / "configs" / "clock_demo.yaml"),
                "task.name=classify",
                f"data.shards={tmp_path / 'wds'}",
                f"run.out_dir={tmp_path}",
                "wandb.mode=disabled",
            ]
        )
        == 1
    )
    assert "prismlab shards index" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name", ["./000000.jpg", "a/b.c/d.e.f", "x", "dir/k.JPG", "k.tar.gz", ".hidden", "a/.b.c", "d/"]
)
def test_member_keys_follow_webdataset_exactly(name):
    from webdataset.tariterators import base_plus_ext

    from prismlab.datasets.format.tar_reader import key_and_extension

    assert key_and_extension(name) == base_plus_ext(name)


def shard_of(path: Path, keys: list[str], rng: np.random.Generator) -> None:
    with wds.TarWriter(str(path)) as sink:
        for i, key in enumerate(keys):
            sink.write({"__key__": key, "jpg": jpeg(pattern_image(PATTERNS[i % 3], rng)), "cls": i % 3})


def keys_of(out: Path, split: str) -> list[str]:
    from prismlab.datasets.format.tar_reader import ShardFile

    manifest = read_manifest(out, split)
    keys = []
    for shard in manifest.shards:
        reader = ShardFile(Path(shard.url))
        keys += [sample["key"] for sample in reader]
        reader.close()
    return keys


@pytest.mark.parametrize(
    "names",
    [
        {"train": ["train-000000.tar", "train-000001.tar"], "val": ["val-000000.tar"]},
        {"train": ["imagenet1k-train-0000.tar", "imagenet1k-train-0001.tar"], "val": ["imagenet1k-validation-00.tar"]},
    ],
    ids=["webdataset", "hf-hub"],
)
def test_a_folder_holding_every_split_is_indexed_split_by_split(tmp_path, names, capsys):
    """timm's and the Hugging Face hub's WebDataset sets keep all splits in one folder: val shards
    must never become training data."""
    rng = np.random.default_rng(5)
    folder = tmp_path / "wds"
    folder.mkdir()
    for split, files in names.items():
        for n, name in enumerate(files):
            shard_of(folder / name, [f"{split}{n}_{i:03d}" for i in range(PER_SHARD if split == "train" else 20)], rng)
    index(str(folder), tmp_path / "index")
    assert read_manifest(tmp_path / "index", "train").samples == 60
    assert read_manifest(tmp_path / "index", "val").samples == 20
    train, val = keys_of(tmp_path / "index", "train"), keys_of(tmp_path / "index", "val")
    assert all(k.startswith("train") for k in train) and all(k.startswith("val") for k in val)
    out = capsys.readouterr().out
    assert "train: 60 samples in 2 shards" in out and "val: 20 samples in 1 shards" in out
    index(str(folder), tmp_path / "only-val", "--split", "val")
    assert read_manifest(tmp_path / "only-val", "val").samples == 20
    assert not (tmp_path / "only-val" / "train.manifest.json").exists()
    assert main(["shards", "index", str(folder), "--out", str(tmp_path / "x"), "--split", "test"]) == 1
    assert "holds no 'test' shards: their names say train, val" in capsys.readouterr().err


def test_a_folder_mixing_split_named_and_unnamed_shards_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(6)
    (tmp_path / "wds").mkdir()
    shard_of(tmp_path / "wds" / "train-000000.tar", ["a", "b"], rng)
    shard_of(tmp_path / "wds" / "000001.tar", ["c", "d"], rng)
    assert main(["shards", "index", str(tmp_path / "wds"), "--out", str(tmp_path / "index")]) == 1
    err = capsys.readouterr().err
    assert "mixes shards named by split (train-000000.tar) with shards that are not (000001.tar)" in err
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("members", ["corrupt", "no-image"])
def test_shards_without_a_readable_image_are_refused_naming_a_sample(tmp_path, capsys, members):
    """Indexed anyway, training on them ended in a raw error from inside the model."""
    with wds.TarWriter(str(tmp_path / "bad.tar")) as sink:
        for i in range(5):
            sample = {"__key__": f"s{i}", "cls": 0}
            sample |= {"jpg": b"not a jpeg"} if members == "corrupt" else {"txt": "a caption"}
            sink.write(sample)
    assert main(["shards", "index", str(tmp_path / "bad.tar"), "--out", str(tmp_path / "index")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    reason = "s0.jpg is not a readable image" if members == "corrupt" else "no image member (it has cls, txt)"
    assert err[-1].startswith("prismlab: error: the train shards of") and f"bad.tar#s0: {reason}" in err[-1]
    assert not (tmp_path / "index" / "train.manifest.json").exists()


def test_some_unreadable_samples_are_counted_and_listed(tmp_path, capsys):
    rng = np.random.default_rng(7)
    with wds.TarWriter(str(tmp_path / "some.tar")) as sink:
        for i in range(6):
            image = b"broken" if i == 2 else jpeg(pattern_image(PATTERNS[0], rng))
            sink.write({"__key__": f"s{i}", "jpg": image, "cls": 0})
    index(str(tmp_path / "some.tar"), tmp_path / "index")
    assert "1 without a readable image" in capsys.readouterr().out
    skipped = read_manifest(tmp_path / "index", "train").skipped
    assert [s["path"] for s in skipped] == ["some.tar#s2"] and skipped[0]["split"] == "train"
