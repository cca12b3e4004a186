"""``napari-sam embed`` and ``napari-sam info``."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_sam.cli import main
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.loader import load_model
from napari_sam.store import EmbeddingStore


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _volume(shape=(4, 40, 50), dtype=np.uint16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 250, shape).astype(dtype)


def _embed(image, ckpt, *extra) -> int:
    return main(
        [
            "embed",
            str(image),
            "--model",
            "tiny",
            "--checkpoint",
            str(ckpt),
            "--precision",
            "fp32",
            "--device",
            "cpu",
            *map(str, extra),
        ]
    )


def test_embed_tiff_slices_then_info(tmp_path, tiny_checkpoint, capsys):
    img = _volume()
    tifffile.imwrite(tmp_path / "cells.tif", img, photometric="minisblack")
    out = tmp_path / "cells.zarr"
    assert (
        _embed(
            tmp_path / "cells.tif",
            tiny_checkpoint,
            "--out",
            out,
            "--axes",
            "ZYX",
            "--slices",
            "1:3",
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out.strip() == f"{out}: 2/2 slices complete"
    assert "embed" in captured.err and "2/2" in captured.err  # the progress bar
    model = load_model("tiny", checkpoint=tiny_checkpoint, device="cpu", precision="fp32")
    store = EmbeddingStore.open(out, model, image=img, mode="r")
    assert store.missing() == [(0,), (3,)]
    ref = Predictor(model).compute_embedding(img[2]).features.half().float()
    assert torch.equal(store.get(2).features, ref)
    assert store.attrs["source"] == str((tmp_path / "cells.tif").resolve())

    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model:" in text and "tiny (weights " in text and "precision:     fp32" in text
    assert "image shape:   (4, 40, 50)" in text and "complete:      2/4 slices" in text


def test_embed_npy_to_default_store_and_zarr_group(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("NAPARI_SAM_CACHE_DIR", str(tmp_path / "cache"))
    np.save(tmp_path / "vol.npy", _volume((3, 40, 50)))
    assert _embed(tmp_path / "vol.npy", tiny_checkpoint, "--no-progress") == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(str(tmp_path / "cache" / "embeddings" / "vol-tiny-"))
    assert out.endswith(".zarr: 3/3 slices complete")
    # a second run finds everything done
    assert _embed(tmp_path / "vol.npy", tiny_checkpoint, "--no-progress") == 0
    assert capsys.readouterr().out.strip().endswith("3/3 slices complete")

    g = zarr.open_group(tmp_path / "img.zarr", mode="w")
    g.create_array("raw", shape=(2, 30, 20, 3), dtype="uint8")[:] = _volume(
        (2, 30, 20, 3), np.uint8
    )
    assert (
        _embed(
            tmp_path / "img.zarr",
            tiny_checkpoint,
            "--axes",
            "ZYXS",
            "--out",
            tmp_path / "rgb.zarr",
            "--no-progress",
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith("2/2 slices complete")


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["missing.tif"], "image not found"),
        ("png", ["x.png"], "unsupported image format"),
        ("tif", ["v.tif", "--axes", "ZYXQ"], "4 letters, image has 3"),
        ("tif", ["v.tif", "--slices", "9"], "out of range"),
        ("tif", ["v.tif", "--channel", "1"], "--channel needs --axes"),
        ("tif", ["v.tif", "--workers", "0"], "--workers must be"),
        ("group", ["g.zarr"], "arrays a, b: give IMAGE as"),
        ("tif", ["v.tif", "--out", "v.tif"], "not a napari-sam embedding store"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path, tiny_checkpoint, capsys, monkeypatch, setup, args, message
):
    monkeypatch.chdir(tmp_path)
    if setup == "png":
        (tmp_path / "x.png").write_bytes(b"png")
    elif setup == "tif":
        tifffile.imwrite(tmp_path / "v.tif", _volume(), photometric="minisblack")
    elif setup == "group":
        g = zarr.open_group(tmp_path / "g.zarr", mode="w")
        g.create_array("a", shape=(4, 4), dtype="u1")
        g.create_array("b", shape=(4, 4), dtype="u1")
    assert _embed(args[0], tiny_checkpoint, *args[1:], "--no-progress") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-sam embed: error:")
    assert message in err[0]


def test_mismatched_store_is_refused_unless_overwrite(tmp_path, tiny_checkpoint, capsys):
    tifffile.imwrite(tmp_path / "v.tif", _volume(), photometric="minisblack")
    out = tmp_path / "s.zarr"
    assert _embed(tmp_path / "v.tif", tiny_checkpoint, "--out", out, "--no-progress") == 0
    capsys.readouterr()
    assert (
        _embed(
            tmp_path / "v.tif",
            tiny_checkpoint,
            "--out",
            out,
            "--no-progress",
            "--contrast-limits",
            "0",
            "100",
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "intensity normalisation" in err[0]
    assert (
        _embed(
            tmp_path / "v.tif",
            tiny_checkpoint,
            "--out",
            out,
            "--no-progress",
            "--contrast-limits",
            "0",
            "100",
            "--overwrite",
        )
        == 0
    )
    assert main(["info", str(out)]) == 0
    assert "contrast limits [0.0, 100.0]" in capsys.readouterr().out


def test_info_on_a_non_store(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "not a napari-sam embedding store" in capsys.readouterr().err


@pytest.mark.slow
def test_embed_on_local_dask_workers(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    np.save(tmp_path / "vol.npy", _volume((4, 40, 50)))
    out = tmp_path / "s.zarr"
    assert (
        _embed(
            tmp_path / "vol.npy", tiny_checkpoint, "--out", out, "--workers", "2", "--no-progress"
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == f"{out}: 4/4 slices complete"


def test_tiff_reader_is_lazy_and_picklable_for_workers(tmp_path):
    import pickle

    from napari_sam.cli.io import TiffArray

    img = _volume()
    tifffile.imwrite(tmp_path / "v.tif", img, photometric="minisblack")
    arr = TiffArray(str(tmp_path / "v.tif"))
    assert arr.shape == img.shape and arr.dtype == img.dtype
    clone = pickle.loads(pickle.dumps(arr))
    assert np.array_equal(clone[2], img[2]) and np.array_equal(arr[1, :5], img[1, :5])
