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


@pytest.mark.slow
def test_dask_on_a_2d_image_matches_local(stack, tiny_checkpoint, capsys):
    """A 2D image with --scheduler N runs on Dask (one slice) — before, the flag was
    ignored for 2D images — and gives the local labels."""
    require("distributed")
    local = args(stack / "img2d.tif", stack / "local.npy", tiny_checkpoint)
    assert main(local) == 0, capsys.readouterr().err
    dask = args(stack / "img2d.tif", stack / "dask.npy", tiny_checkpoint, "--scheduler", "1")
    assert main(dask) == 0, capsys.readouterr().err
    want = np.load(stack / "local.npy")
    assert want.shape == (40, 48) and want.max() >= 1
    np.testing.assert_array_equal(np.load(stack / "dask.npy"), want)


@pytest.mark.slow
def test_dask_workers_on_tiled_planes_match_the_local_tiled_run(tmp_path, capsys, monkeypatch):
    """Demo model (256-px input), a (2, 260, 180) stack of small nuclei: 2 × 1 tiles of
    192 + halo 32 per plane. ``--workers 1`` segments the tiles on Dask and merges them
    here: the z-linked labels equal the local tiled run's."""
    import torch

    from napari_sam.synthetic import nuclei_large

    dask = require("dask")
    require("distributed")
    torch.set_num_threads(1)
    # a busy worker on a loaded machine must not be dropped by the scheduler
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP", "300s")
    img = np.stack([nuclei_large((260, 180), (8, 24), seed=s)[0] for s in (41, 42)])
    np.save(tmp_path / "img.npy", img)
    flags = ["--precision", "fp32", "--device", "cpu", "--no-progress", "--link-z"]
    base = ["amg", str(tmp_path / "img.npy"), *flags, "--min-slices", "1"]
    assert main([*base, "--out", str(tmp_path / "local.npy")]) == 0, capsys.readouterr().err
    with dask.config.set({"distributed.comm.timeouts.tcp": "300s"}):
        rc = main([*base, "--out", str(tmp_path / "dask.npy"), "--workers", "1"])
    assert rc == 0, capsys.readouterr().err
    assert (
        "tiles: 2 × 1 of 192 × 192 px + halo 32 px per plane (on Dask)" in capsys.readouterr().out
    )
    local = np.load(tmp_path / "local.npy")
    assert local.max() > 10
    np.testing.assert_array_equal(np.load(tmp_path / "dask.npy"), local)
