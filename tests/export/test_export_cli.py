"""``napari-sam export`` and ``napari-sam replay``: files, calibration, one-line errors
(exit 2)."""

from __future__ import annotations

import json

import ngff_zarr as nz
import numpy as np
import tifffile

from napari_sam.cli import main
from napari_sam.engine.loader import load_model
from napari_sam.export import PromptRound, Provenance
from napari_sam.export.ome_zarr import read_ome_zarr


def test_export_command_calibrates(tmp_path, labels3d, capsys) -> None:
    src = tmp_path / "labels.tif"
    tifffile.imwrite(src, labels3d)
    out = tmp_path / "out.ome.zarr"
    rc = main(["export", str(src), "--out", str(out), "--scale", "2", "0.5", "0.5",
               "--translate", "10", "100", "-50", "--units", "micrometer", "--levels", "1"])
    assert rc == 0 and "out.objects.csv" in capsys.readouterr().out
    r = read_ome_zarr(out)
    assert r.scale == (2.0, 0.5, 0.5) and r.translate == (10.0, 100.0, -50.0)
    assert r.units == ("micrometer",) * 3 and r.n_levels == 2
    np.testing.assert_array_equal(np.asarray(r.data), labels3d)
    assert main(["export", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and err.count("\n") == 1
    assert main(["export", str(src), "--out", str(tmp_path / "x.tif"), "--scale", "1"]) == 2
    assert "--scale needs 3 values" in capsys.readouterr().err


def test_export_into_an_image_takes_its_calibration(tmp_path, labels3d) -> None:
    image = tmp_path / "image.ome.zarr"
    raw = nz.to_ngff_image(np.zeros(labels3d.shape, np.uint8), dims=["z", "y", "x"],
                           scale={"z": 3.0, "y": 0.2, "x": 0.2},
                           translation={"z": 1.0, "y": 2.0, "x": 3.0},
                           axes_units={"z": "micrometer", "y": "micrometer",
                                       "x": "micrometer"})
    nz.to_ngff_zarr(str(image), nz.to_multiscales(raw, scale_factors=[]), version="0.5")
    src = tmp_path / "labels.npy"
    np.save(src, labels3d)
    assert main(["export", str(src), "--out", str(image / "labels" / "nuclei")]) == 0
    r = read_ome_zarr(image / "labels" / "nuclei")
    assert r.scale == (3.0, 0.2, 0.2) and r.translate == (1.0, 2.0, 3.0)
    assert (tmp_path / "image.nuclei.objects.csv").is_file()


def test_replay_command_errors(tmp_path, tiny_model, capsys) -> None:
    image = np.zeros((3, 32, 32), np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="minisblack")
    prov = Provenance.create(tiny_model, image_shape=(4, 32, 32))
    prov.add_prompted((1,), [PromptRound.create([[5, 5]], [1])], [1])
    prov.save(tmp_path / "p.json")
    rc = main(["replay", str(tmp_path / "p.json"), str(tmp_path / "img.tif"),
               "--out", str(tmp_path / "o.tif")])
    assert rc == 2 and "image shape (3, 32, 32) is not the recorded" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "nope.json"), str(tmp_path / "img.tif"),
                 "--out", str(tmp_path / "o.tif")]) == 2
    (tmp_path / "q.json").write_text(json.dumps({"x": 1}))
    assert main(["replay", str(tmp_path / "q.json"), str(tmp_path / "img.tif"),
                 "--out", str(tmp_path / "o.tif")]) == 2
    assert "not a napari-sam provenance" in capsys.readouterr().err


def test_replay_command_with_an_ome_zarr_image_level(tmp_path, tiny_checkpoint):
    """IMAGE as an OME-Zarr image read at --level; the output takes its calibration."""
    rng = np.random.default_rng(1)
    full = (rng.random((2, 64, 64)) * 255).astype(np.uint8)
    raw = nz.to_ngff_image(full, dims=["z", "y", "x"], scale={"z": 2.0, "y": 0.5, "x": 0.5},
                           translation={"z": 0.0, "y": 1.0, "x": 1.0})
    image = tmp_path / "img.ome.zarr"
    nz.to_ngff_zarr(str(image), nz.to_multiscales(raw, scale_factors=[{"z": 1, "y": 2,
                                                                       "x": 2}]), version="0.5")
    # recorded with the model loaded from the checkpoint, as the widget does: the
    # weights hash is the file's, which the replay's load reproduces
    model = load_model("tiny", checkpoint=tiny_checkpoint, device="cpu", precision="fp32")
    prov = Provenance.create(model, image_shape=(2, 32, 32), checkpoint=tiny_checkpoint)
    prov.add_prompted((1,), [PromptRound.create(box=[4, 4, 20, 24])], [1])
    prov.save(tmp_path / "p.json")
    out = tmp_path / "r.ome.zarr"
    rc = main(["replay", str(tmp_path / "p.json"), str(image), "--level", "1",
               "--out", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 0
    r = read_ome_zarr(out)
    assert r.scale == (2.0, 1.0, 1.0) and r.data.shape == (2, 32, 32)
