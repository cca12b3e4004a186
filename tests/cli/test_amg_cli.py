"""``napari-sam amg`` as a user runs it (tiny checkpoint; files in, labels out; the
demo model on the synthetic sample)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam.cli import main

from requires import require

FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture
def stack(tmp_path):
    img = np.zeros((4, 40, 48), np.uint16)
    img[:, 8:20, 10:24] = 3000
    img[:, 26:36, 30:44] = 5000
    tifffile.imwrite(tmp_path / "img.tif", img, photometric="minisblack")
    tifffile.imwrite(tmp_path / "img2d.tif", img[0])
    return tmp_path


def args(src, out, ckpt, *extra):
    return [
        "amg",
        str(src),
        "--model",
        "tiny",
        "--checkpoint",
        str(ckpt),
        "--out",
        str(out),
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--no-progress",
        *FAST,
        *extra,
    ]


def consecutive(a):
    ids = np.unique(a)
    return ids.tolist() == list(range(len(ids)))


def test_2d_image_gives_2d_labels(stack, tiny_checkpoint, capsys):
    rc = main(args(stack / "img2d.tif", stack / "o" / "l.tif", tiny_checkpoint))
    assert rc == 0, capsys.readouterr().err
    out = tifffile.imread(stack / "o" / "l.tif")
    assert out.shape == (40, 48) and out.dtype == np.uint32 and consecutive(out)
    assert "points_per_side=4" in capsys.readouterr().out


def test_3d_per_slice_and_linked(stack, tiny_checkpoint, capsys):
    rc = main(args(stack / "img.tif", stack / "per.npy", tiny_checkpoint))
    assert rc == 0, capsys.readouterr().err
    per = np.load(stack / "per.npy")
    assert per.shape == (4, 40, 48)
    for plane in per:  # each slice numbered 1..n on its own
        assert consecutive(plane)
    store = stack / "emb.zarr"
    extra = ["--link-z", "--min-slices", "1", "--store", str(store)]
    rc = main(args(stack / "img.tif", stack / "lin.zarr", tiny_checkpoint, *extra))
    assert rc == 0, capsys.readouterr().err
    import zarr

    linked = np.asarray(zarr.open_array(str(stack / "lin.zarr"), mode="r"))
    assert linked.shape == (4, 40, 48) and linked.dtype == np.uint32 and consecutive(linked)
    assert store.exists()
    # the same volume, identical slices: every object links through all slices
    assert int(linked.max()) == int(per[0].max())


def test_user_errors_are_one_line(stack, tiny_checkpoint, capsys):
    assert main(args(stack / "img.tif", stack / "x.png", tiny_checkpoint)) == 2
    assert "use .tif, .npy or .zarr" in capsys.readouterr().err
    assert main(["amg", str(stack / "img.tif")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and len(err.strip().splitlines()) == 1
    a = args(stack / "img.tif", stack / "x.tif", tiny_checkpoint, "--link-iou", "2")
    assert main(a) == 2
    assert "--link-iou" in capsys.readouterr().err


def test_sample_prints_f1_and_writes_overlay(tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    out = tmp_path / "s" / "labels.tif"
    rc = main(["amg", "--sample", "nuclei-2d", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    f1 = float(text.split("F1 at IoU 0.5 vs ground truth: ")[1].split()[0])
    assert f1 >= 0.8, text  # docs/amg_volumes.md: 0.857 on this sample
    assert (tmp_path / "s" / "labels_overlay.png").stat().st_size > 1000
    assert tifffile.imread(out).shape == (256, 256)


@pytest.mark.slow
def test_dask_scheduler_matches_local(stack, tiny_checkpoint, capsys):
    require("distributed")
    local = args(stack / "img.tif", stack / "local.npy", tiny_checkpoint, "--link-z")
    assert main(local) == 0, capsys.readouterr().err
    store = str(stack / "emb.zarr")
    extra = ["--link-z", "--scheduler", "1", "--store", store]
    assert main(args(stack / "img.tif", stack / "dask.npy", tiny_checkpoint, *extra)) == 0, (
        capsys.readouterr().err
    )
    np.testing.assert_array_equal(np.load(stack / "dask.npy"), np.load(stack / "local.npy"))
