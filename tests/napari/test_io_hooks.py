"""napari round-trips through the npe2 writer / reader contributions: a 3D Labels layer
with scale (2, 0.5, 0.5) and translate (10, 100, −50) saved by napari-sam as OME-Zarr
and OME-TIFF, re-opened by napari-ome-zarr (a real OME-Zarr client) and by napari-sam's
reader: identical ids, scale and translate; other TIFFs go to napari's own reader."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam._napari.io_hooks import get_reader
from napari_sam.export import PROVENANCE_KEY, PromptRound, Provenance

SCALE = (2.0, 0.5, 0.5)
TRANSLATE = (10.0, 100.0, -50.0)


@pytest.fixture
def labels_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    lab = np.zeros((6, 40, 52), np.uint32)
    lab[1:4, 5:20, 6:30] = 1
    lab[0:6, 22:38, 30:50] = 2
    lab[3, 30:33, 2:5] = 9
    prov = Provenance.create({"name": "demo", "weights_hash": "x", "precision": "fp32"},
                             image_shape=lab.shape)
    prov.add_prompted((2,), [PromptRound.create([[10, 12]], [1])], [1], predicted_iou=0.9)
    layer = viewer.add_labels(lab, name="nuclei", scale=SCALE, translate=TRANSLATE,
                              units=("micrometer",) * 3, axis_labels=("z", "y", "x"),
                              metadata={PROVENANCE_KEY: prov.to_dict()})
    return viewer, layer


def _world_origin(layer) -> np.ndarray:
    return np.asarray(layer.data_to_world(np.zeros(layer.ndim)))


def _check(layer, lab, *, scaled=True) -> None:
    data = layer.data[0] if layer.multiscale else layer.data
    np.testing.assert_array_equal(np.asarray(data), lab)
    np.testing.assert_allclose(layer.scale, SCALE)
    np.testing.assert_allclose(_world_origin(layer), TRANSLATE)


def test_ome_zarr_round_trip(labels_layer, tmp_path) -> None:
    viewer, layer = labels_layer
    path = tmp_path / "nuclei.ome.zarr"
    written = viewer.layers.save(str(path), selected=True, plugin="napari-sam")
    assert str(path) in written and (tmp_path / "nuclei.objects.csv").is_file()
    # napari-ome-zarr: a standalone label export is an NGFF multiscales image
    (opened,) = viewer.open(str(path), plugin="napari-ome-zarr")
    _check(opened, layer.data)
    # napari-sam's reader: a Labels layer with the object table as features
    (ours,) = viewer.open(str(path), plugin="napari-sam")
    assert ours._type_string == "labels"
    _check(ours, layer.data)
    feats = ours.features.set_index("index")
    assert feats.loc[2, "voxels"] == int((layer.data == 2).sum())
    assert feats.loc[1, "source"] == "click" and feats.loc[9, "source"] == "unknown"
    assert feats.loc[2, "volume"] == pytest.approx((layer.data == 2).sum() * 0.5)
    assert ours.metadata[PROVENANCE_KEY]["actions"][0]["ids"] == [1]
    assert [str(u) for u in ours.units] == ["micrometer"] * 3


def test_labels_saved_into_an_ome_zarr_image_open_as_labels(labels_layer, tmp_path) -> None:
    import ngff_zarr as nz

    viewer, layer = labels_layer
    image = tmp_path / "image.ome.zarr"
    raw = nz.to_ngff_image(np.ones((6, 40, 52), np.uint16), dims=["z", "y", "x"],
                           scale=dict(zip("zyx", SCALE, strict=True)),
                           translation=dict(zip("zyx", TRANSLATE, strict=True)))
    nz.to_ngff_zarr(str(image), nz.to_multiscales(raw, scale_factors=[]), version="0.5")
    viewer.layers.save(str(image / "labels" / "nuclei"), selected=True, plugin="napari-sam")
    layers = viewer.open(str(image), plugin="napari-ome-zarr")
    labels = [x for x in layers if x._type_string == "labels"]
    assert len(labels) == 1
    _check(labels[0], layer.data)


def test_tiff_round_trip_and_other_tiffs(labels_layer, tmp_path) -> None:
    viewer, layer = labels_layer
    path = tmp_path / "nuclei.tif"
    viewer.layers.save(str(path), selected=True, plugin="napari-sam")
    with tifffile.TiffFile(path) as tif:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert (pixels["PhysicalSizeZ"], pixels["PhysicalSizeY"], pixels["PhysicalSizeX"]) == SCALE
    (ours,) = viewer.open(str(path), plugin="napari-sam")
    assert ours._type_string == "labels"
    _check(ours, layer.data)
    assert ours.features.set_index("index").loc[9, "voxels"] == 9
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((4, 5), np.uint8))
    assert get_reader(str(plain)) is None
    (builtin,) = viewer.open(str(plain))
    assert builtin._type_string == "image"


def test_save_again_replaces_the_export(labels_layer, tmp_path) -> None:
    viewer, layer = labels_layer
    path = tmp_path / "nuclei.ome.zarr"
    viewer.layers.save(str(path), selected=True, plugin="napari-sam")
    layer.data = np.where(layer.data == 2, 0, layer.data).astype(np.uint32)
    viewer.layers.save(str(path), selected=True, plugin="napari-sam")
    (ours,) = viewer.open(str(path), plugin="napari-sam")
    assert 2 not in np.unique(np.asarray(ours.data))
    assert get_reader(str(tmp_path)) is None  # a plain folder is not ours
