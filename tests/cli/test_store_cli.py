"""``--store`` of ``amg`` / ``propagate`` and ``embed``'s store: a store made for another
model, precision, normalisation or image is refused (one line naming the difference and
the two ways out) unless the user gives ``--overwrite``; never silently wiped."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam.cli import main

FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture
def vol(tmp_path):
    img = np.zeros((3, 40, 48), np.uint16)
    img[:, 8:20, 10:24] = 3000
    img[:, 26:36, 30:44] = 5000
    tifffile.imwrite(tmp_path / "w.tif", img)
    seeds = np.zeros(img.shape, np.uint8)
    seeds[1, 8:20, 10:24] = 1
    tifffile.imwrite(tmp_path / "seeds.tif", seeds)
    return tmp_path


def embed(tmp, ckpt, precision="fp32", *extra):
    return main(["embed", str(tmp / "w.tif"), "--model", "tiny", "--checkpoint", str(ckpt),
                 "--precision", precision, "--device", "cpu", "--out", str(tmp / "w.zarr"),
                 "--no-progress", *extra])


def amg(tmp, ckpt, precision, *extra):
    return ["amg", str(tmp / "w.tif"), "--store", str(tmp / "w.zarr"), "--out",
            str(tmp / "l.tif"), "--model", "tiny", "--checkpoint", str(ckpt), "--precision",
            precision, "--device", "cpu", "--no-progress", *FAST, *extra]


def propagate(tmp, ckpt, precision, *extra):
    return ["propagate", str(tmp / "w.tif"), "--labels", str(tmp / "seeds.tif"), "--store",
            str(tmp / "w.zarr"), "--out", str(tmp / "l.tif"), "--model", "tiny",
            "--checkpoint", str(ckpt), "--precision", precision, "--device", "cpu",
            "--no-progress", *extra]


def store_info(tmp, capsys) -> str:
    capsys.readouterr()
    assert main(["info", str(tmp / "w.zarr")]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [amg, propagate])
def test_store_for_another_precision_is_refused_unless_overwrite(vol, tiny_checkpoint, capsys,
                                                                 command):
    assert embed(vol, tiny_checkpoint, "fp32") == 0
    before = store_info(vol, capsys)
    assert "precision:     fp32" in before and "complete:      3/3" in before

    assert main(command(vol, tiny_checkpoint, "bf16")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "precision" in err[0] and "fp32" in err[0] and "bf16" in err[0]
    assert "use --overwrite to replace it, or another --store path" in err[0]
    assert "on_mismatch" not in err[0] and "recompute (overwrite)" not in err[0]
    assert store_info(vol, capsys) == before  # the fp32 store is still there, complete
    assert not (vol / "l.tif").exists()

    assert main(command(vol, tiny_checkpoint, "bf16", "--overwrite")) == 0
    after = store_info(vol, capsys)
    assert "precision:     bf16" in after
    assert (vol / "l.tif").exists()


def test_store_of_another_image_is_refused(vol, tiny_checkpoint, capsys):
    assert embed(vol, tiny_checkpoint) == 0
    tifffile.imwrite(vol / "w.tif", np.zeros((3, 40, 50), np.uint16))  # other geometry
    assert main(amg(vol, tiny_checkpoint, "fp32")) == 2
    err = capsys.readouterr().err
    assert "made for something else" in err and "--overwrite" in err
    assert "(3, 40, 48)" in store_info(vol, capsys)


@pytest.mark.parametrize("command", ["embed", "propagate"])
def test_changed_slice_names_cli_flags_not_api_names(vol, tiny_checkpoint, capsys, command):
    """The image changed since its embeddings were stored (same shape and dtype): the
    message tells CLI users about --overwrite, not on_mismatch='...'."""
    assert embed(vol, tiny_checkpoint) == 0
    img = tifffile.imread(vol / "w.tif")
    img[2, 0, 0] = 1  # slice 2 changed (propagation visits it; slice 1 holds the seed)
    tifffile.imwrite(vol / "w.tif", img)
    capsys.readouterr()
    if command == "embed":
        rc, flag = embed(vol, tiny_checkpoint, "fp32", "--verify"), "--out"
    else:
        rc, flag = main(propagate(vol, tiny_checkpoint, "fp32")), "--store"
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "slice (2,)" in err[0] and "other image data" in err[0]
    assert f"use --overwrite to recompute changed slices, or another {flag} path" in err[0]
    assert "on_mismatch" not in err[0]
    if command == "embed":
        assert embed(vol, tiny_checkpoint, "fp32", "--verify", "--overwrite") == 0
    else:
        assert main(propagate(vol, tiny_checkpoint, "fp32", "--overwrite")) == 0
