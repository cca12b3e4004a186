"""OME-Zarr images as CLI input (cli/io.read_image, the one reader): a multiscales
image is read at level 0 (or ``--level N``), lazily; ``napari-sam embed image.ome.zarr``
stores the embeddings of that level; ``napari-sam amg image.ome.zarr --out
image.ome.zarr/labels/sam`` writes OME-Zarr labels inside the image with its physical
scale (napari-ome-zarr / ngff-zarr see an image-label), equal to the labels of the same
pixels given as a TIFF; bad levels are one line."""

from __future__ import annotations

import json

import ngff_zarr as nz
import numpy as np
import pytest
import tifffile
import torch

from napari_sam.cli import main
from napari_sam.cli.io import image_calibration, read_image
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.engine.loader import load_model
from napari_sam.export import read_ome_zarr, read_tiff
from napari_sam.store import EmbeddingStore

FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
TINY = ["--model", "tiny", "--precision", "fp32", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ome_image(tmp_path):
    """(3, 64, 64) uint8 OME-Zarr 0.5 image, 2 levels, scale (2, 0.5, 0.5) µm."""
    vol = np.zeros((3, 64, 64), np.uint8)
    vol[:, 10:30, 12:40] = 200
    vol[:, 40:56, 30:60] = 120
    vol += np.random.default_rng(3).integers(0, 30, vol.shape).astype(np.uint8)
    raw = nz.to_ngff_image(vol, dims=["z", "y", "x"], scale={"z": 2.0, "y": 0.5, "x": 0.5},
                           translation={"z": 0.0, "y": 3.0, "x": -1.0})
    ms = nz.to_multiscales(raw, scale_factors=[{"z": 1, "y": 2, "x": 2}])
    for axis in ms.metadata.axes:
        axis.unit = "micrometer"
    path = tmp_path / "image.ome.zarr"
    nz.to_ngff_zarr(str(path), ms, version="0.5")
    return path, vol


def test_read_image_levels_and_calibration(ome_image):
    path, vol = ome_image
    level0 = read_image(path)
    assert level0.shape == vol.shape and not isinstance(level0, np.ndarray)  # lazy
    np.testing.assert_array_equal(np.asarray(level0), vol)
    assert read_image(path, 1).shape == (3, 32, 32)
    cal = image_calibration(path)
    assert cal.scale == (2.0, 0.5, 0.5) and cal.translate == (0.0, 3.0, -1.0)
    assert image_calibration(path, 1).scale == (2.0, 1.0, 1.0)


def test_bad_level_is_one_line(ome_image, tmp_path, tiny_checkpoint, capsys):
    path, vol = ome_image
    rc = main(["embed", str(path), "--level", "5", "--checkpoint", str(tiny_checkpoint),
               *TINY, "--out", str(tmp_path / "s.zarr")])
    err = capsys.readouterr().err
    assert rc == 2 and "level" in err and "Traceback" not in err
    tifffile.imwrite(tmp_path / "img.tif", vol, photometric="minisblack")
    rc = main(["embed", str(tmp_path / "img.tif"), "--level", "1", "--checkpoint",
               str(tiny_checkpoint), *TINY, "--out", str(tmp_path / "s.zarr")])
    assert rc == 2 and "not an OME-Zarr image" in capsys.readouterr().err


def test_embed_an_ome_zarr_image(ome_image, tmp_path, tiny_checkpoint, capsys):
    path, vol = ome_image
    out = tmp_path / "emb.zarr"
    rc = main(["embed", str(path), "--checkpoint", str(tiny_checkpoint), *TINY,
               "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    model = load_model("tiny", checkpoint=tiny_checkpoint, device="cpu", precision="fp32")
    store = EmbeddingStore.open(out, model, image=vol, mode="r")
    assert store.missing() == []
    ref = Predictor(model).compute_embedding(vol[1]).features.half().float()
    assert torch.equal(store.get(1).features, ref)


def test_amg_writes_labels_into_the_image(ome_image, tmp_path, tiny_checkpoint, capsys):
    path, vol = ome_image
    target = path / "labels" / "sam"
    rc = main(["amg", str(path), "--checkpoint", str(tiny_checkpoint), *TINY, *FAST,
               "--out", str(target), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    tifffile.imwrite(tmp_path / "img.tif", vol, photometric="minisblack")
    rc = main(["amg", str(tmp_path / "img.tif"), "--checkpoint", str(tiny_checkpoint),
               *TINY, *FAST, "--out", str(tmp_path / "ref.tif"), "--no-progress"])
    assert rc == 0
    ref = tifffile.imread(tmp_path / "ref.tif")
    assert ref.any()
    labels = read_ome_zarr(target)
    np.testing.assert_array_equal(np.asarray(labels.data), ref)
    assert labels.scale == (2.0, 0.5, 0.5) and labels.translate == (0.0, 3.0, -1.0)
    assert labels.units == ("micrometer",) * 3
    group = json.loads((path / "labels" / "zarr.json").read_text())
    assert "sam" in group["attributes"]["ome"]["labels"]  # registered with the image
    # the image itself is still read as the image (level 0), not as labels
    np.testing.assert_array_equal(np.asarray(read_image(path)), vol)
    # a TIFF output from an OME-Zarr input carries the physical scale too
    rc = main(["amg", str(path), "--checkpoint", str(tiny_checkpoint), *TINY, *FAST,
               "--out", str(tmp_path / "calibrated.tif"), "--no-progress"])
    assert rc == 0
    data, cal, _ = read_tiff(tmp_path / "calibrated.tif")
    np.testing.assert_array_equal(np.asarray(data), ref)
    assert cal.scale == (2.0, 0.5, 0.5) and cal.units == ("micrometer",) * 3


def test_segment_on_an_ome_zarr_slice_writes_calibrated_labels(ome_image, tmp_path,
                                                              tiny_checkpoint):
    """`segment` on one slice of an OME-Zarr: labels.tif carries the (y, x) scale."""
    path, _vol = ome_image
    (tmp_path / "pts.csv").write_text("object,row,col,label\n1,30,30,1\n")
    rc = main(["segment", str(path), "--slice", "1", "--points", str(tmp_path / "pts.csv"),
               "--checkpoint", str(tiny_checkpoint), *TINY, "--out", str(tmp_path / "out")])
    assert rc == 0
    data, cal, _ = read_tiff(tmp_path / "out" / "labels.tif")
    assert np.asarray(data).shape == (64, 64)
    assert cal.scale == (0.5, 0.5) and cal.units == ("micrometer",) * 2
