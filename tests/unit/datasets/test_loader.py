"""The streaming loader: equal batch counts on every rank and worker, exact coverage, seeded
reproducibility, exact mid-epoch resume without re-reading, corrupt and truncated data, channels."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from prismlab.datasets.format.manifest import Manifest, ShardInfo, manifest_path
from prismlab.datasets.read import loader as loader_module
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.loader import ShardLoader
from prismlab.datasets.read.plan import exact_batches, resampled_batches
from prismlab.datasets.read.transforms import BatchTransform, normalize
from prismlab.datasets.write.writer import write_source_shards
from prismlab.errors import PrismlabError
from prismlab.io import atomic_write_json

from tests.helpers.shard_sets import SAMPLES, indexed_source


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("indexed")
    write_source_shards(indexed_source(SAMPLES), out, shard_size=10, workers=1)
    return out


@pytest.fixture(scope="module")
def packed_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("indexed-packed")
    write_source_shards(indexed_source(SAMPLES), out, shard_size=10, pack=4, workers=1)
    return out


def run(loader: ShardLoader) -> list[loader_module.Batch]:
    return list(loader)


LOADER_ARGUMENTS = ("train", "seed", "batches_per_epoch", "rank", "world_size", "device", "reuse_buffers")


def make(shards: Path, **kwargs) -> ShardLoader:
    """A loader of the train split; keyword arguments are loader arguments or DataConfig fields."""
    settings = {"mode": "exact", "batch_size": 8, "num_workers": 0, "seed": 5, "rank": 0, "world_size": 1} | kwargs
    loader = {"train": True} | {k: settings.pop(k) for k in LOADER_ARGUMENTS if k in settings}
    return ShardLoader(DataConfig(shards=str(shards), **settings), "train", **loader)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("start", [0, 5, 36])
def test_plans_give_equal_batch_counts_and_exact_cover(world_size, start):
    """The plan alone (no I/O), for both modes, from any epoch position."""
    shard_samples = [10] * 7 + [7]
    everything = sorted((s, i) for s, n in enumerate(shard_samples) for i in range(n))
    for shuffle in (False, True):
        head = (
            exact_batches(
                shard_samples,
                start=0,
                rank=0,
                world_size=1,
                batch_size=start or 1,
                seed=1,
                epoch=2,
                shuffle=shuffle,
                window=4,
            )[:1]
            if start
            else []
        )
        counts, valid = [], [(s, i) for b in head for s, i in zip(b.shards.tolist(), b.indices.tolist())]
        for rank in range(world_size):
            batches = exact_batches(
                shard_samples,
                start=start,
                rank=rank,
                world_size=world_size,
                batch_size=6,
                seed=1,
                epoch=2,
                shuffle=shuffle,
                window=4,
            )
            counts.append(len(batches))
            valid += [(s, i) for b in batches for s, i, v in zip(b.shards.tolist(), b.indices.tolist(), b.valid) if v]
        assert len(set(counts)) == 1
        assert sorted(valid) == everything  # the head a 1-process run consumed, then the rest on world_size
    for rank in range(world_size):
        batches = resampled_batches(
            shard_samples, done=0, rank=rank, batch_size=6, batches_per_epoch=7, seed=1, epoch=2, window=4
        )
        assert [len(b.shards) for b in batches] == [6] * 7
        assert (
            resampled_batches(
                shard_samples, done=3, rank=rank, batch_size=6, batches_per_epoch=7, seed=1, epoch=2, window=4
            )[0].seed
            == batches[3].seed
        )


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_exact_mode_no_duplicates_no_losses_equal_batches(shards, world_size, workers):
    seen, counts = [], []
    for rank in range(world_size):
        batches = run(make(shards, rank=rank, world_size=world_size, num_workers=workers))
        counts.append(len(batches))
        for batch in batches:
            assert batch.images.shape[1:] == (1, 4, 4) and len(batch.valid) == len(batch.labels) == len(batch.images)
            seen += batch.labels[batch.valid].tolist()
            # Pixels spell the label: the images really are those samples.
            expected = batch.labels % 256
            assert torch.allclose((batch.images[:, 0, 1, 1] * 0.5 + 0.5) * 255, expected.float(), atol=1e-3)
    assert len(set(counts)) == 1 and counts[0] == make(shards, world_size=world_size).batches_per_epoch
    assert sorted(seen) == list(range(SAMPLES))


@pytest.mark.parametrize("workers", [0, 3])
def test_resampled_mode_fixed_full_batches_on_every_rank(shards, workers):
    for rank in range(2):
        batches = run(make(shards, mode="resampled", batches_per_epoch=5, rank=rank, world_size=2, num_workers=workers))
        assert [len(b.labels) for b in batches] == [8] * 5
        assert all(b.valid.all() for b in batches)


def test_stream_is_seeded_and_changes_per_epoch(shards):
    first, second = (
        make(shards, mode="resampled", batches_per_epoch=4),
        make(shards, mode="resampled", batches_per_epoch=4),
    )
    epoch0 = [b.labels.tolist() for b in first]
    assert epoch0 == [b.labels.tolist() for b in second]
    assert epoch0 != [b.labels.tolist() for b in first]  # epoch 1
    other_seed = make(shards, mode="resampled", batches_per_epoch=4, seed=6)
    assert epoch0 != [b.labels.tolist() for b in other_seed]


def signature(batch) -> tuple:
    return batch.labels.tolist(), batch.images.flatten().tolist()


@pytest.mark.parametrize(
    "mode, workers, k, flip",
    [
        ("resampled", 2, 3, True),
        ("exact", 3, 4, True),
        ("exact", 0, 5, True),
        ("resampled", 3, 1, True),
        ("exact", 2, 3, "alternate"),
    ],
)
def test_resume_mid_epoch_equals_uninterrupted_run(shards, mode, workers, k, flip):
    settings = {
        "mode": mode,
        "num_workers": workers,
        "batches_per_epoch": 6 if mode == "resampled" else None,
        "flip": flip,
        "crop": 3,
        "rank": 1,
        "world_size": 2,
    }
    reference = make(shards, **settings)
    run(reference)  # epoch 0
    uninterrupted = [signature(b) for b in reference]  # epoch 1
    interrupted = make(shards, **settings)
    interrupted.load_state_dict({**interrupted.state_dict(), "epoch": 1})
    stream = iter(interrupted)
    head = [signature(next(stream)) for _ in range(k)]
    state = interrupted.state_dict()
    assert state["epoch"] == 1 and state["batch"] == k
    resumed = make(shards, **settings)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # survives a checkpoint round trip
    tail = [signature(b) for b in resumed]
    assert head + tail == uninterrupted
    assert resumed.state_dict()["epoch"] == 2 and resumed.state_dict()["batch"] == 0


def test_resume_does_not_read_the_skipped_batches(shards, monkeypatch):
    reads = []
    original = loader_module.ShardFile.sample

    def counting(self, index, *args):
        reads.append(index)
        return original(self, index, *args)

    monkeypatch.setattr(loader_module.ShardFile, "sample", counting)
    loader = make(shards, shuffle_buffer=5)
    loader.load_state_dict({**loader.state_dict(), "batch": 8, "position": 64})
    batches = run(loader)
    assert len(batches) == 2 and sum(len(b.labels) for b in batches) == SAMPLES - 64
    assert len(reads) == SAMPLES - 64  # the rest of the epoch, and nothing else


def test_resume_refuses_another_batch_size(shards):
    state = make(shards, num_workers=2).state_dict()
    with pytest.raises(PrismlabError, match="batch_size was 8 now 4"):
        make(shards, batch_size=4).load_state_dict(state)


@pytest.mark.parametrize("first, second", [((2, 0), (1, 2)), ((1, 0), (3, 2)), ((3, 1), (2, 0))])
def test_resume_on_other_process_and_worker_counts_sees_every_sample_once(shards, first, second):
    """Elastic exact mode: stopped mid-epoch on W1 processes x K1 workers, resumed on W2 x K2."""
    (w1, k1), (w2, k2) = first, second
    loaders = [make(shards, rank=r, world_size=w1, num_workers=k1, batch_size=4) for r in range(w1)]
    streams = [iter(loader) for loader in loaders]
    seen = []
    for _ in range(3):  # three global steps, then a stop
        for stream in streams:
            batch = next(stream)
            seen += batch.labels[batch.valid].tolist()
    state = json.loads(json.dumps(loaders[0].state_dict()))  # rank 0's state goes into the checkpoint
    assert state["position"] == 3 * 4 * w1
    resumed = [make(shards, rank=r, world_size=w2, num_workers=k2, batch_size=4) for r in range(w2)]
    counts = []
    for loader in resumed:
        loader.load_state_dict(state)
        batches = run(loader)
        counts.append(len(batches))
        seen += [label for b in batches for label in b.labels[b.valid].tolist()]
    assert len(set(counts)) == 1
    assert sorted(seen) == list(range(SAMPLES))  # none twice, none skipped
    assert all(loader.state_dict()["epoch"] == 1 for loader in resumed)


def mirrored_by_label(loader: ShardLoader) -> dict[int, bool]:
    """One epoch: whether each sample came mirrored (sample i > 0 has 0 at its top-left pixel, i elsewhere)."""
    return {
        label: bool(pixels[0, -1, 0] == 0)
        for batch in loader
        for pixels, label, valid in zip(batch.pixels, batch.labels.tolist(), batch.valid.tolist())
        if valid and label > 0
    }


def test_alternating_flip_mirrors_a_fixed_half_and_the_other_half_in_odd_epochs(shards):
    loader = make(shards, flip="alternate", num_workers=2)
    epochs = [mirrored_by_label(loader) for _ in range(3)]
    assert len(epochs[0]) == SAMPLES - 1
    assert 0.3 < np.mean(list(epochs[0].values())) < 0.7
    assert epochs[1] == {label: not mirrored for label, mirrored in epochs[0].items()}
    assert epochs[2] == epochs[0]
    # On other ranks and worker counts each sample flips as it does here (elastic resume).
    for rank in range(3):
        elsewhere = make(shards, flip="alternate", num_workers=1, world_size=3, rank=rank)
        assert all(epochs[0][label] == mirrored for label, mirrored in mirrored_by_label(elsewhere).items())
    assert mirrored_by_label(make(shards, flip="alternate", seed=6)) != epochs[0]  # drawn from the run's seed


def test_packed_shards_stream_like_plain_ones(shards, packed_shards):
    plain = [signature(b) for b in make(shards, num_workers=2)]
    packed = [signature(b) for b in make(packed_shards, num_workers=2)]
    assert plain == packed


def test_eval_stream_restarts_every_pass(shards):
    stream = make(shards, batch_size=10, num_workers=1, train=False)
    first = [b.labels.tolist() for b in stream]
    partial = iter(stream)
    next(partial)
    assert [b.labels.tolist() for b in stream] == first
    assert stream.batches_per_epoch == 8


def write_handmade_split(out: Path, pngs: list[bytes]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        for i, png in enumerate(pngs):
            sink.write({"__key__": f"{i:04d}", "png": png, "cls": i})
    info = ShardInfo(path.name, len(pngs), path.stat().st_size, "")
    atomic_write_json(
        manifest_path(out, "train"),
        {**Manifest("train", "handmade", len(pngs), [4, 4], ["gray"], [info]).__dict__, "shards": [info.__dict__]},
    )
    return path


def png_bytes(value: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_corrupt_sample_is_skipped_and_counted(tmp_path, caplog):
    pngs = [png_bytes(i) for i in range(10)]
    pngs[3] = b"\x89PNG garbage"
    write_handmade_split(tmp_path, pngs)
    batches = run(make(tmp_path, batch_size=5, train=False))
    assert [len(b.labels) for b in batches] == [4, 5]  # same batch count, one sample fewer
    assert [b.corrupt for b in batches] == [1, 0]
    assert 3 not in torch.cat([b.labels for b in batches]).tolist()
    assert "skipped 1 corrupt samples" in caplog.text


def test_missing_or_truncated_shard_is_a_clear_error_before_reading(tmp_path):
    path = write_handmade_split(tmp_path, [png_bytes(i) for i in range(10)])
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(PrismlabError, match="train-000000.tar is truncated"):
        make(tmp_path)
    path.unlink()
    with pytest.raises(PrismlabError, match="train-000000.tar listed in train.manifest.json is missing"):
        make(tmp_path)


def test_truncated_shard_found_while_reading_names_it(tmp_path):
    path = write_handmade_split(tmp_path, [png_bytes(i) for i in range(10)])
    loader = make(tmp_path, num_workers=1)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(PrismlabError, match="train-000000.tar"):
        run(loader)


def test_channel_selection_and_random_dropping(tmp_path):
    write_source_shards(indexed_source(20, channels=3), tmp_path, shard_size=10, workers=1)
    batch = next(iter(make(tmp_path, channels=["B", "R"], mean=[0.0], std=[1.0])))
    assert batch.channels == ["B", "R"] and batch.images.shape[1] == 2
    assert torch.allclose(batch.images[:, 0, 2, 2], torch.full((8,), 80 / 255))
    dropping = make(tmp_path, mode="resampled", batches_per_epoch=12, drop_channels=0.5)
    kept = [b.channels for b in dropping]
    assert all(b and set(b) <= {"R", "G", "B"} for b in kept)
    assert any(len(b) < 3 for b in kept)
    with pytest.raises(PrismlabError, match="not in these shards"):
        make(tmp_path, channels=["NIR"])


def test_geometric_transforms_change_shapes(shards):
    batch = next(iter(make(shards, resize=12, crop=10, rotation=15, flip=True)))
    assert batch.images.shape == (8, 1, 10, 10)


def test_padded_crop_translates_training_images_only():
    from prismlab.datasets.read.transforms import BatchTransform

    image = torch.arange(64, dtype=torch.uint8).reshape(1, 8, 8)
    data = DataConfig(crop=8, crop_padding=2, mean=[0.0], std=[1.0])
    train = BatchTransform(data, ["L"])
    shifted = [train([image], seed)[0][0, 0] for seed in range(20)]
    assert all(s.shape == (8, 8) for s in shifted)
    assert any(not torch.equal(s, image[0] / 255) for s in shifted)
    # Reflect padding: every value still comes from the image.
    assert all(set((s * 255).round().int().flatten().tolist()) <= set(range(64)) for s in shifted)
    evaluated = BatchTransform(data, ["L"], train=False)([image], 0)[0][0, 0]
    assert torch.allclose(evaluated, image[0] / 255)


@pytest.mark.parametrize("dtype, top", [(torch.uint8, 255), (torch.float32, 65535)])
def test_normalising_maps_to_the_mean_and_std_and_leaves_the_pixels_as_they_are(dtype, top):
    """uint8 batches, and float32 ones (16-bit images), whose conversion to float is no copy."""
    transform = BatchTransform(DataConfig(mean=[0.25, 0.5], std=[0.5, 0.25]), ["A", "B"])
    pixels = torch.randint(0, top + 1, (3, 5, 4, 2)).to(dtype)
    kept = pixels.clone()
    images = normalize(pixels, *transform.normalization(["A", "B"], dtype))
    expected = (pixels.permute(0, 3, 1, 2).double() / top - torch.tensor([0.25, 0.5]).view(1, 2, 1, 1)) / torch.tensor(
        [0.5, 0.25]
    ).view(1, 2, 1, 1)
    assert images.dtype == torch.float32 and images.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(images.double(), expected, rtol=0, atol=1e-5)
    assert torch.equal(pixels, kept)


def test_workers_start_with_the_parents_objects_out_of_the_collectors_reach(shards, tmp_path, monkeypatch):
    """A worker's garbage collections must not walk (and so copy, page by page) the parent's heap;
    the parent's own collector is left as it was."""
    start_worker = loader_module.leave_stop_signals_to_the_parent

    def recording(worker_id: int) -> None:
        (tmp_path / f"worker{worker_id}").write_text(str(gc.get_freeze_count()))
        start_worker(worker_id)

    monkeypatch.setattr(loader_module, "leave_stop_signals_to_the_parent", recording)
    assert gc.get_freeze_count() == 0
    assert run(make(shards, num_workers=2))
    assert [int((tmp_path / f"worker{k}").read_text()) > 1000 for k in range(2)] == [True, True]
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_reused_buffers_give_the_same_batches_to_a_consumer_that_uses_each_at_once(shards, workers):
    fresh = [signature(b) for b in make(shards, num_workers=workers, batch_size=4, flip=True)]
    reused = [signature(b) for b in make(shards, num_workers=workers, batch_size=4, flip=True, reuse_buffers=True)]
    assert reused == fresh


def test_shard_bytes_changed_in_place_are_an_error_not_other_data(packed_shards, tmp_path):
    """A packed shard whose image bytes change but not its size: the sha256 of its manifest catches it."""
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(packed_shards, copy)
    path = copy / "train-000000.tar"
    data = bytearray(path.read_bytes())
    data[1500] ^= 0xFF  # inside the first packed group's pixels
    path.write_bytes(bytes(data))
    with pytest.raises(PrismlabError, match="train-000000.tar does not match the sha256 of its manifest"):
        run(make(copy, cache_dir=str(tmp_path / "c")))


def test_crop_pct_resizes_the_shorter_side_before_the_eval_centre_crop():
    """timm's evaluation crop: shorter side to crop / crop_pct, then the centre crop; training crops
    as before."""
    from torchvision.transforms import v2

    image = torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)
    data = DataConfig(crop=16, crop_pct=0.8, mean=[0.0], std=[1.0])
    evaluated = BatchTransform(data, ["R", "G", "B"], train=False).assemble([image], seed=0)[0][0]
    expected = v2.CenterCrop(16)(v2.Resize(20, antialias=True)(image)).permute(1, 2, 0)
    assert torch.equal(evaluated, expected)
    trained = BatchTransform(data, ["R", "G", "B"], train=True).assemble([image], seed=0)[0][0]
    assert trained.shape == (16, 16, 3) and not torch.equal(trained, expected)
    with pytest.raises(ValueError, match="data.crop_pct=0.8 needs data.crop"):
        DataConfig(crop_pct=0.8)
