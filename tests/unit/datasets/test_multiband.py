"""Multi-band images, as satellite and microscopy users have them: 13-band TIFF tiles (16-bit,
interleaved and planar, as tifffile writes them) and 8-bit `.npy` arrays, whose class is carried
by three of the bands. `prismlab shards --channel-names` records the band names; the loader decodes
them in its workers, bit for bit; the any-channel stem on a timm backbone trains on them and is
evaluated band subset by band subset."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import webdataset as wds

from prismlab.cli import main
from prismlab.datasets.format.samples import decode_pixels
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.loader import ShardLoader

from tests.helpers import DEMO
from tests.helpers.runs import tiny_run

BANDS = [f"B{i:02d}" for i in range(1, 13)] + ["B8A"]
CARRIERS = {0: "B02", 1: "B08", 2: "B11"}
"""The band that is bright for each class; the other bands are noise."""
SIDE = 16


def tile(label: int, rng: np.random.Generator, dtype: str) -> np.ndarray:
    top = np.iinfo(dtype).max
    pixels = rng.integers(0, top // 4, size=(SIDE, SIDE, len(BANDS)), dtype=dtype)
    pixels[..., BANDS.index(CARRIERS[label])] += np.asarray(top // 2, dtype=dtype)
    return pixels


def write_tiles(root: Path, kind: str, per_class: dict[str, int]) -> dict[str, np.ndarray]:
    """<root>/<split>/<class>/<n>.tif (uint16, every other one planar) or .npy (uint8); returns the arrays."""
    rng = np.random.default_rng(7)
    written = {}
    for split, count in per_class.items():
        for label in CARRIERS:
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for n in range(count):
                if kind == "tif":
                    pixels, path = tile(label, rng, "uint16"), folder / f"{n}.tif"
                    planar = n % 2 == 1  # bands stored one plane after another
                    tifffile.imwrite(
                        path,
                        np.moveaxis(pixels, -1, 0) if planar else pixels,
                        planarconfig="separate" if planar else "contig",
                    )
                else:
                    pixels, path = tile(label, rng, "uint8"), folder / f"{n}.npy"
                    np.save(path, pixels)
                written[str(path)] = pixels
    return written


@pytest.fixture(scope="module", params=["tif", "npy"])
def band_shards(request, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], str]:
    root = tmp_path_factory.mktemp(f"bands-{request.param}")
    arrays = write_tiles(root / "tiles", request.param, {"train": 16, "val": 4, "test": 4})
    names = ",".join(BANDS)
    assert main(["shards", str(root / "tiles"), "--out", str(root / "shards"), "--channel-names", names]) == 0
    return root / "shards", arrays, request.param


def test_shards_keep_the_files_and_name_the_bands(band_shards):
    shards, arrays, kind = band_shards
    manifest = json.loads((shards / "train.manifest.json").read_text())
    assert manifest["channels"] == BANDS and manifest["image_size"] == [SIDE, SIDE] and manifest["samples"] == 48
    with tarfile.open(next(shards.glob("train-*.tar"))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    key = next(name for name in members if name.endswith(".json")).removesuffix(".json")
    assert {name.split(".", 1)[1] for name in members} == {kind, "cls", "json"}
    meta = json.loads(members[f"{key}.json"])
    assert meta["channels"] == BANDS
    source = Path(meta["origin"])
    assert members[f"{key}.{kind}"] == source.read_bytes()  # the file as written, not re-encoded
    decoded = decode_pixels(members[f"{key}.{kind}"], extension=kind).permute(1, 2, 0).numpy()
    assert np.array_equal(decoded, arrays[str(source)])


def test_the_loader_decodes_every_band_bit_for_bit(band_shards):
    shards, arrays, kind = band_shards
    data = DataConfig(shards=str(shards), mode="exact", batch_size=8, num_workers=1, flip=False)
    loader = ShardLoader(data, "train", train=False, seed=0, rank=0, world_size=1)
    decoded = [image for batch in loader for image in batch.pixels]
    assert len(decoded) == 48 and all(b.channels == BANDS for b in loader)
    expected = sorted(a.astype(np.float64).sum() for path, a in arrays.items() if "/train/" in path)
    assert sorted(float(image.double().sum()) for image in decoded) == expected
    top = 255.0 if kind == "npy" else 65535.0
    batch = next(iter(loader))
    assert float(batch.images.max()) <= 1.0 and float(batch.pixels.max()) <= top  # normalised by the dtype's range


def test_the_any_channel_stem_on_a_timm_backbone_trains_on_13_bands(band_shards, tmp_path, capsys):
    shards, _, _ = band_shards
    run = [str(DEMO), "task.name=classify", *tiny_run(shards, tmp_path, "bands")]
    run += ["model.name=timm/test_resnet", "model.stem=any_channel", "data.drop_channels=0.3"]
    assert main(["train", *run]) == 0
    assert main(["eval", str(tmp_path / "bands"), "--split", "test", "--channel-subsets"]) == 0
    rows = json.loads((tmp_path / "bands" / "channel_subsets_test.json").read_text())
    # 13 bands: all of them, each left out, each alone (not 8,191 subsets).
    assert len(rows) == 1 + 2 * len(BANDS) and rows[0]["channels"] == "+".join(BANDS)
    assert rows[-1]["channels"] == "B8A" and all(r["samples"] == 12 for r in rows)


def test_arrays_need_their_band_names_and_one_kind(tmp_path, capsys):
    write_tiles(tmp_path / "tiles", "npy", {"train": 2})
    assert main(["shards", str(tmp_path / "tiles"), "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "holds 13-band arrays; name the bands once: --channel-names B01,B02,B03,... (13 names)" in err
    assert not (tmp_path / "a" / "train.manifest.json").exists()
    assert main(["shards", str(tmp_path / "tiles"), "--out", str(tmp_path / "b"), "--channel-names", "R,G,B"]) == 1
    assert "3 names for the 13 channels" in capsys.readouterr().err
    np.save(tmp_path / "tiles" / "train" / "class0" / "odd.npy", np.zeros((SIDE, SIDE, 4), np.uint8))
    assert main(["shards", str(tmp_path / "tiles"), "--out", str(tmp_path / "c"), "--channel-names", "x"]) == 1
    assert "arrays of several kinds (4 bands of uint8, 13 bands of uint8)" in capsys.readouterr().err


def test_a_4_band_tiff_is_4_bands_not_pils_rgba_and_colour_tiffs_need_no_names(tmp_path):
    """PIL would open an 8-bit 4-band tile as RGBA (or CMYK, converted to RGB with a band lost)."""
    rng = np.random.default_rng(3)
    for bands, names in ((4, ["B", "G", "R", "NIR"]), (3, None)):
        tiles = tmp_path / f"tiles{bands}"
        pixels = {}
        for label in ("a", "b"):
            (tiles / label).mkdir(parents=True)
            for n in range(3):
                pixels[str(tiles / label / f"{n}.tif")] = rng.integers(0, 256, (8, 8, bands), dtype=np.uint8)
                tifffile.imwrite(tiles / label / f"{n}.tif", pixels[str(tiles / label / f"{n}.tif")])
        out = tmp_path / f"shards{bands}"
        assert (
            main(["shards", str(tiles), "--out", str(out), *(["--channel-names", ",".join(names)] if names else [])])
            == 0
        )
        assert json.loads((out / "train.manifest.json").read_text())["channels"] == (names or ["R", "G", "B"])
        with tarfile.open(next(out.glob("train-*.tar"))) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                origin = json.loads(data)["origin"]
                tif = members[name.removesuffix(".json") + ".tif"]
                assert np.array_equal(decode_pixels(tif, extension="tif").permute(1, 2, 0).numpy(), pixels[origin])


def test_band_shards_another_tool_wrote_are_indexed_with_their_names(tmp_path, capsys):
    """13-band TIFF tiles in shards written by webdataset's own ShardWriter, as a satellite archive
    ships them: `prismlab shards index --channel-names` records the bands, the loader decodes them."""
    arrays = write_tiles(tmp_path / "tiles", "tif", {"train": 4})
    (tmp_path / "wds").mkdir()
    with wds.ShardWriter(str(tmp_path / "wds" / "train-%06d.tar"), maxcount=5) as sink:
        for n, path in enumerate(sorted(arrays)):
            sink.write(
                {"__key__": f"tile{n:04d}", "tif": Path(path).read_bytes(), "cls": int(Path(path).parent.name[-1])}
            )
    assert main(["shards", "index", str(tmp_path / "wds"), "--out", str(tmp_path / "unnamed")]) == 1
    assert "hold 13-band arrays; name the bands once: --channel-names B01,B02,B03,... (13 names)" in (
        capsys.readouterr().err
    )
    names = ["shards", "index", str(tmp_path / "wds"), "--out", str(tmp_path / "index"), "--channel-names"]
    assert main([*names, ",".join(BANDS)]) == 0
    manifest = json.loads((tmp_path / "index" / "train.manifest.json").read_text())
    assert manifest["channels"] == BANDS and manifest["samples"] == 12 and manifest["image_size"] == [SIDE, SIDE]
    data = DataConfig(shards=str(tmp_path / "index"), mode="exact", batch_size=4, num_workers=0)
    decoded = [
        image
        for batch in ShardLoader(data, "train", train=False, seed=0, rank=0, world_size=1)
        for image in batch.pixels
    ]
    expected = sorted(a.astype(np.float64).sum() for a in arrays.values())
    assert sorted(float(image.double().sum()) for image in decoded) == expected
    assert main([*names[:-1], "--channel-names", "R,G,B"]) == 1
    assert "3 names for the 13 channels" in capsys.readouterr().err
