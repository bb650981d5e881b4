"""Writers: every source round-trips through shards (pixel-exact for PNG, labels exact), manifests
are right, an interrupted write resumes, --verify catches damage, bad input is reported."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from prismlab.cli import main
from prismlab.datasets.format.manifest import read_manifest
from prismlab.datasets.format.samples import decode_pixels, encoded_image
from prismlab.datasets.format.tar_reader import ShardFile
from prismlab.datasets.write.sources import carve_split, detect_source, select_classes
from prismlab.datasets.write.verify import verify_shards
from prismlab.datasets.write.writer import write_source_shards
from prismlab.errors import PrismlabError

from tests.helpers.image_sets import make_cifar, make_idx, make_image_folder


def read_split(out: Path, split: str) -> list[tuple[np.ndarray, int, dict]]:
    """(pixels [H, W, C], label, json or {}) of every sample in the split's shards, in shard order."""
    manifest = read_manifest(out, split)
    samples = []
    for shard in manifest.shards:
        for sample in ShardFile(out / shard.name, manifest.pack):
            if "pixels" in sample:
                samples.append((sample["pixels"], sample["cls"], {}))
            else:
                members = sample["members"]
                pixels = decode_pixels(encoded_image(members)[1]).permute(1, 2, 0).numpy()
                samples.append((pixels, int(members["cls"]), json.loads(members["json"])))
    return samples


def squeeze(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16"])
def test_image_folder_png_round_trip_is_pixel_exact(tmp_path, mode):
    written = make_image_folder(tmp_path / "src", {"train": 3, "test": 2}, mode=mode)
    manifests = write_source_shards(detect_source(tmp_path / "src"), tmp_path / "out", shard_size=4, workers=1)
    assert set(manifests) == {"train", "test"}
    classes = ["cat", "dog", "emu"]
    for split, count in (("train", 9), ("test", 6)):
        samples = read_split(tmp_path / "out", split)
        assert len(samples) == count
        for pixels, label, meta in samples:
            source = written[meta["origin"]]
            assert np.array_equal(squeeze(pixels), source)
            assert classes[label] == meta["label"] == Path(meta["origin"]).parent.name
            assert meta["size"] == [8, 8]
    assert (
        manifests["train"].channels
        == {
            "L": ["gray"],
            "LA": ["gray", "alpha"],
            "RGB": ["R", "G", "B"],
            "RGBA": ["R", "G", "B", "alpha"],
            "I;16": ["gray"],
        }[mode]
    )


def test_jpeg_bytes_pass_through_unchanged(tmp_path):
    make_image_folder(tmp_path / "src", None, ext="jpg", size=16)
    write_source_shards(detect_source(tmp_path / "src"), tmp_path / "out", workers=1)
    manifest = read_manifest(tmp_path / "out", "train")
    members = [s["members"] for s in ShardFile(tmp_path / "out" / manifest.shards[0].name)]
    assert len(members) == 12
    for m in members:
        assert m["jpg"] == Path(json.loads(m["json"])["origin"]).read_bytes()


def test_mixed_modes_widen_to_rgb(tmp_path):
    make_image_folder(tmp_path / "src", None, classes=("a",), mode="L")
    make_image_folder(tmp_path / "src", None, classes=("b",), mode="RGB", seed=1)
    manifests = write_source_shards(detect_source(tmp_path / "src"), tmp_path / "out", workers=1)
    assert manifests["train"].channels == ["R", "G", "B"]
    assert {p.shape for p, _, _ in read_split(tmp_path / "out", "train")} == {(8, 8, 3)}


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_round_trip(tmp_path, hundred):
    sets = make_cifar(tmp_path / "cifar", hundred=hundred)
    manifests = write_source_shards(detect_source(tmp_path / "cifar"), tmp_path / "out", shard_size=7, workers=2)
    assert manifests["train"].samples == 30 and manifests["test"].samples == 5
    assert len(manifests["train"].class_names) == (100 if hundred else 10)
    for split in ("train", "test"):
        images, labels = sets[split]
        expected = sorted((img.tobytes(), label) for img, label in zip(images, labels))
        got = sorted((p.tobytes(), label) for p, label, _ in read_split(tmp_path / "out", split))
        assert got == expected


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_packed(tmp_path, gz):
    sets = make_idx(tmp_path / "fashion-mnist", gz=gz)
    source = detect_source(tmp_path / "fashion-mnist")
    assert source.class_names[0] == "T-shirt/top"
    write_source_shards(source, tmp_path / "out", shard_size=5, pack=2, workers=1)
    assert read_manifest(tmp_path / "out", "train").pack == 2
    for split in ("train", "test"):
        images, labels = sets[split]
        expected = sorted((img.tobytes(), int(label)) for img, label in zip(images, labels))
        got = sorted((squeeze(p).tobytes(), label) for p, label, _ in read_split(tmp_path / "out", split))
        assert got == expected


def test_manifest_integrity_and_global_shuffle(tmp_path):
    make_cifar(tmp_path / "cifar", per_batch=20)
    write_source_shards(
        detect_source(tmp_path / "cifar"), tmp_path / "out", shard_size=16, shard_bytes=20_000, workers=2
    )
    manifest = read_manifest(tmp_path / "out", "train")
    raw = json.loads((tmp_path / "out" / "train.manifest.json").read_text())
    assert raw["samples"] == 100 == sum(s.samples for s in manifest.shards)
    assert raw["bytes"] == sum((tmp_path / "out" / s.name).stat().st_size for s in manifest.shards)
    for shard in manifest.shards:
        assert hashlib.sha256((tmp_path / "out" / shard.name).read_bytes()).hexdigest() == shard.sha256
        assert shard.bytes <= 20_000 + 2 * 10_240  # the limit is an estimate; tar rounds archives up to 10 KiB
    assert len(manifest.shards) > 100 // 16 + 1
    assert manifest.image_size == [32, 32] and manifest.channels == ["R", "G", "B"] and manifest.skipped == []
    assert not list((tmp_path / "out").glob(".*")), "sidecars and temp files are removed"
    origins = [meta["origin"] for _, _, meta in read_split(tmp_path / "out", "train")]
    assert origins != sorted(origins, key=lambda o: (o.split("[")[0], int(o.split("[")[1][:-1])))


def test_interrupted_write_resumes_by_skipping_finished_shards(tmp_path, monkeypatch):
    make_cifar(tmp_path / "cifar")
    source, out = detect_source(tmp_path / "cifar"), tmp_path / "out"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr("prismlab.datasets.write.writer.finish_split", crash)
        with pytest.raises(KeyboardInterrupt):
            write_source_shards(source, out, shard_size=8, workers=1)
    assert not (out / "train.manifest.json").exists()
    first = {p.name: p.read_bytes() for p in out.glob("train-*.tar")}
    assert len(first) == 4
    (out / "train-000002.tar").unlink()  # the shard that was being written
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("train-*.tar")}
    write_source_shards(source, out, shard_size=8, workers=1)
    assert {p.name: p.read_bytes() for p in out.glob("train-*.tar")} == first
    assert all((out / name).stat().st_mtime_ns == t for name, t in mtimes.items())
    assert read_manifest(out, "train").samples == 30


def test_rewrite_with_other_settings_is_refused(tmp_path):
    make_cifar(tmp_path / "cifar")
    write_source_shards(detect_source(tmp_path / "cifar"), tmp_path / "out", shard_size=8, workers=1)
    with pytest.raises(PrismlabError, match="other data or settings"):
        write_source_shards(detect_source(tmp_path / "cifar"), tmp_path / "out", shard_size=9, workers=1)


def test_a_refused_rewrite_writes_no_split(tmp_path):
    """Following the refusal's advice for one split (delete train, keep val) and carving val anew:
    every split is checked before any is written, so train is not rewritten beside the old val."""
    make_image_folder(tmp_path / "src", None, classes=("a", "b", "c", "d"))

    def write(fraction: float) -> None:
        source = detect_source(tmp_path / "src")
        carve_split(source, "val", fraction, seed=0)
        write_source_shards(source, tmp_path / "out", shard_size=4, workers=1)

    write(0.25)
    for path in (tmp_path / "out").glob("train*"):
        path.unlink()
    with pytest.raises(PrismlabError, match="already holds a 'val' split"):
        write(0.5)
    assert not list((tmp_path / "out").glob("train*"))


def test_verify_reports_a_damaged_shard(tmp_path):
    make_cifar(tmp_path / "cifar")
    out = tmp_path / "out"
    write_source_shards(detect_source(tmp_path / "cifar"), out, shard_size=8, workers=1)
    assert verify_shards(out) == {"train": 30, "test": 5}
    shard = out / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(PrismlabError, match="train-000001.tar: sha256"):
        verify_shards(out)


def test_corrupt_images_are_reported_counted_and_skipped(tmp_path, caplog):
    make_image_folder(tmp_path / "src", None)
    (tmp_path / "src" / "cat" / "garbage.png").write_bytes(b"not an image at all")
    good = (tmp_path / "src" / "dog" / "0.png").read_bytes()
    (tmp_path / "src" / "dog" / "cut.png").write_bytes(good[: len(good) // 2])
    manifests = write_source_shards(detect_source(tmp_path / "src"), tmp_path / "out", workers=1)
    skipped = {Path(s["path"]).name: s["reason"] for s in manifests["train"].skipped}
    assert set(skipped) == {"garbage.png", "cut.png"} and all(skipped.values())
    assert manifests["train"].samples == 12
    assert "garbage.png" in caplog.text  # (cut.png is logged by a writer process)


def test_empty_source_and_empty_class_folder_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrismlabError, match="no class folders"):
        detect_source(tmp_path / "empty")
    make_image_folder(tmp_path / "src", None)
    (tmp_path / "src" / "yak").mkdir()
    with pytest.raises(PrismlabError, match="yak holds no images") as err:
        detect_source(tmp_path / "src")
    assert "\n" not in str(err.value)


def test_seeded_val_fraction(tmp_path):
    make_image_folder(tmp_path / "src", None, classes=("a", "b", "c", "d", "e"))
    first, second = detect_source(tmp_path / "src"), detect_source(tmp_path / "src")
    carve_split(first, "val", 0.25, seed=3)
    carve_split(second, "val", 0.25, seed=3)
    assert len(first.splits["val"]) == 5 and len(first.splits["train"]) == 15
    assert [r.origin for r in first.splits["val"]] == [r.origin for r in second.splits["val"]]
    assert not {r.origin for r in first.splits["val"]} & {r.origin for r in first.splits["train"]}


def test_val_and_test_fractions_are_both_of_the_whole_set(tmp_path, capsys):
    make_image_folder(tmp_path / "src", None, classes=("a", "b", "c", "d", "e", "f"))  # 24 images
    argv = ["shards", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--val-fraction", "0.25"]
    assert main([*argv, "--test-fraction", "0.25"]) == 0
    counts = {split: read_manifest(tmp_path / "out", split).samples for split in ("train", "val", "test")}
    assert counts == {"train": 12, "val": 6, "test": 6}
    capsys.readouterr()
    assert main([*argv[:-1], "0.99", "--out", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "leaves no training samples" in err and "smaller" in err, err


def test_class_subset_relabelled_in_the_given_order(tmp_path, capsys):
    make_image_folder(tmp_path / "src", None, classes=("a", "b", "c", "d"))
    full = detect_source(tmp_path / "src")
    subset = detect_source(tmp_path / "src")
    select_classes(subset, ["d", "b"])
    assert subset.class_names == ["d", "b"]
    expected = sorted((r.origin, {3: 0, 1: 1}[r.label]) for r in full.splits["train"] if r.label in (1, 3))
    assert sorted((r.origin, r.label) for r in subset.splits["train"]) == expected
    with pytest.raises(PrismlabError, match="unknown yak; pick distinct names from a, b, c, d"):
        select_classes(detect_source(tmp_path / "src"), ["a", "yak"])
    assert (
        main(["shards", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--classes", "c,a", "--workers", "1"])
        == 0
    )
    manifest = json.loads((tmp_path / "out" / "train.manifest.json").read_text())
    assert manifest["class_names"] == ["c", "a"] and manifest["samples"] == len(expected)


def test_cli_writes_and_verifies(tmp_path, capsys):
    make_image_folder(tmp_path / "src", None)
    out = tmp_path / "out"
    assert (
        main(
            [
                "shards",
                str(tmp_path / "src"),
                "--out",
                str(out),
                "--val-fraction",
                "0.25",
                "--workers",
                "1",
                "--pack",
                "3",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "train: 9 samples" in printed and "val: 3 samples" in printed
    assert main(["shards", str(tmp_path / "src"), "--out", str(out), "--verify"]) == 0
    assert main(["shards", str(tmp_path / "src"), "--out", str(tmp_path / "o2"), "--format", "cifar"]) == 1
    assert capsys.readouterr().err.startswith("prismlab: error: ")


def test_sizes_that_make_a_pathological_set_are_warned_about(tmp_path, caplog):
    """A shard per sample (`--shard-size 1`, or a tiny `--shard-bytes`), or a held-out split larger
    than what is left to train on, wrote without a word."""
    make_image_folder(tmp_path / "src", None, classes=tuple("abcdefgh"))  # 32 images
    out = tmp_path / "out"
    assert main(["shards", str(tmp_path / "src"), "--out", str(out), "--shard-size", "1"]) == 0
    assert "train: 32 shards of 1.0 samples each on average" in caplog.text and "--shard-size" in caplog.text
    caplog.clear()
    assert main(["shards", str(tmp_path / "src"), "--out", str(tmp_path / "carved"), "--val-fraction", "0.75"]) == 0
    assert "--val-fraction 0.75 leaves train only 8 of 32 samples, fewer than val's 24" in caplog.text
    caplog.clear()
    assert main(["shards", str(tmp_path / "src"), "--out", str(tmp_path / "fine"), "--val-fraction", "0.25"]) == 0
    assert "WARNING" not in caplog.text
