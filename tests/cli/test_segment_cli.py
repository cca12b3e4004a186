"""``napari-sam segment`` as a user runs it (tiny checkpoint, CSV prompts)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_sam.cli import main


@pytest.fixture
def image_file(tmp_path):
    img = np.zeros((48, 64), np.uint16)
    img[10:20, 10:25] = 3000
    img[30:44, 40:60] = 5000
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, img)
    return path


def test_segment_points_and_boxes(tmp_path, image_file, tiny_checkpoint, capsys):
    pts = tmp_path / "points.csv"
    pts.write_text("object,row,col,label\na,15,17,1\na,2,2,0\nb,36,50,1\n")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("object,row_min,col_min,row_max,col_max\nc,28,38,46,62\n")
    out = tmp_path / "out"
    rc = main(
        [
            "segment",
            str(image_file),
            "--points",
            str(pts),
            "--boxes",
            str(boxes),
            "--model",
            "tiny",
            "--checkpoint",
            str(tiny_checkpoint),
            "--precision",
            "fp32",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == (48, 64) and labels.dtype == np.uint32
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    png = np.asarray(Image.open(out / "overlay.png"))
    assert png.shape == (48, 64, 3)
    assert "3 objects" in capsys.readouterr().out


def test_segment_bad_csv_is_one_line_error(tmp_path, image_file, tiny_checkpoint, capsys):
    pts = tmp_path / "points.csv"
    pts.write_text("object,x,y\na,1,2\n")
    rc = main(
        [
            "segment",
            str(image_file),
            "--points",
            str(pts),
            "--checkpoint",
            str(tiny_checkpoint),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing column" in err


def test_segment_point_outside_image(tmp_path, image_file, tiny_checkpoint, capsys):
    pts = tmp_path / "points.csv"
    pts.write_text("object,row,col\na,100,2\n")
    rc = main(
        [
            "segment",
            str(image_file),
            "--points",
            str(pts),
            "--model",
            "tiny",
            "--checkpoint",
            str(tiny_checkpoint),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    assert "outside the slice" in capsys.readouterr().err


def test_segment_missing_input(tmp_path, capsys):
    rc = main(["segment", str(tmp_path / "nope.tif"), "--points", "x.csv"])
    assert rc == 2
    assert "not found" in capsys.readouterr().err
