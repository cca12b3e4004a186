"""``napari-sam propagate`` as a user runs it (tiny checkpoint; files in, labels out)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam.cli import main


@pytest.fixture
def files(tmp_path):
    img = np.zeros((6, 40, 48), np.uint16)
    img[1:5, 8:20, 10:24] = 3000
    img[:, 26:36, 30:44] = 5000
    seeds = np.zeros(img.shape, np.uint16)
    seeds[2, 8:20, 10:24] = 3
    seeds[3, 26:36, 30:44] = 8
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "seeds.tif", seeds)
    return tmp_path, img, seeds


def args(tmp, ckpt, *extra):
    return [
        "propagate",
        str(tmp / "img.tif"),
        "--model",
        "tiny",
        "--checkpoint",
        str(ckpt),
        "--labels",
        str(tmp / "seeds.tif"),
        "--out",
        str(tmp / "out" / "labels.tif"),
        "--precision",
        "fp32",
        "--no-progress",
        *extra,
    ]


def test_propagate_writes_labels_and_fills_the_store(files, tiny_checkpoint, capsys):
    tmp, img, seeds = files
    store = tmp / "emb.zarr"
    extra = ["--iou-stop", "0", "--area-factor", "1000", "--store", str(store)]
    rc = main(args(tmp, tiny_checkpoint, *extra))
    assert rc == 0, capsys.readouterr().err
    out = tifffile.imread(tmp / "out" / "labels.tif")
    assert out.shape == img.shape and out.dtype == seeds.dtype
    assert set(np.unique(out)) <= {0, 3, 8}
    np.testing.assert_array_equal(out[seeds > 0], seeds[seeds > 0])  # seeds kept
    assert "2 object(s)" in capsys.readouterr().out

    from napari_sam.engine.loader import load_model
    from napari_sam.store import EmbeddingStore

    model = load_model("tiny", checkpoint=tiny_checkpoint, precision="fp32")
    s = EmbeddingStore.open(store, model, image=img, mode="r")
    assert s.missing() == []  # every slice visited was encoded and stored

    # a second run reuses the store and gives the same labels (replacing the output)
    assert main(args(tmp, tiny_checkpoint, *extra)) == 2  # OUT exists
    assert "use --overwrite or another --out" in capsys.readouterr().err
    assert main(args(tmp, tiny_checkpoint, *extra, "--overwrite")) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp / "out" / "labels.tif"), out)


def test_propagate_4d_per_time_point_and_axis(files, tiny_checkpoint, tmp_path):
    tmp, img, seeds = files
    tifffile.imwrite(tmp / "img.tif", np.stack([img, img]))
    s4 = np.zeros((2, *seeds.shape), seeds.dtype)
    s4[1] = seeds
    tifffile.imwrite(tmp / "seeds.tif", s4)
    assert main(args(tmp, tiny_checkpoint, "--iou-stop", "0", "--objects", "3")) == 0
    out = tifffile.imread(tmp / "out" / "labels.tif")
    assert out.shape == s4.shape
    assert not out[0].any()  # no seeds at t = 0: nothing to propagate
    assert set(np.unique(out[1])) <= {0, 3, 8}
    assert (out[1] == 8).sum() == (seeds == 8).sum()  # not selected: unchanged

    tifffile.imwrite(tmp / "img.tif", img)
    tifffile.imwrite(tmp / "seeds.tif", seeds)
    assert main(args(tmp, tiny_checkpoint, "--axis", "2", "--overwrite")) == 0  # along X


def test_propagate_user_errors_are_one_line(files, tiny_checkpoint, capsys):
    tmp, img, seeds = files
    tifffile.imwrite(tmp / "seeds.tif", seeds[:3], photometric="minisblack")
    assert main(args(tmp, tiny_checkpoint)) == 2
    err = capsys.readouterr().err
    assert "seeds shape" in err and "Traceback" not in err
    tifffile.imwrite(tmp / "seeds.tif", np.zeros_like(seeds))
    assert main(args(tmp, tiny_checkpoint)) == 2
    assert "no object" in capsys.readouterr().err
    tifffile.imwrite(tmp / "img.tif", img[0])
    assert main(args(tmp, tiny_checkpoint)) == 2
    assert "(Z, Y, X)" in capsys.readouterr().err
