"""How the command line reports problems: exit 2 and ONE line for what the user can fix
(offline weights, bad checkpoint, store write errors, bad slices, unreadable input),
exit 1 and a request to report for internal errors, 130 for Ctrl-C."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam.cli import main


@pytest.fixture
def img2d(tmp_path):
    img = np.zeros((40, 48), np.uint16)
    img[8:20, 10:24] = 3000
    tifffile.imwrite(tmp_path / "img.tif", img)
    (tmp_path / "pts.csv").write_text("object,row,col\n1,14,17\n")
    return tmp_path


def segment(tmp, ckpt, *extra, image="img.tif"):
    return [
        "segment",
        str(tmp / image),
        "--points",
        str(tmp / "pts.csv"),
        "--model",
        "tiny",
        "--checkpoint",
        str(ckpt),
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--out",
        str(tmp / "out"),
        *extra,
    ]


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"napari-sam {command}: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def offline(monkeypatch, cls_name="WeightsUnavailableError"):
    """fetch_weights as on a machine without network (or with a corrupt download)."""
    from napari_sam import weights

    def fail(*_a, **_k):
        cls = getattr(weights, cls_name)
        raise cls("Could not download the SAM weights 'vit_b' (ConnectionError:\n no route)")

    monkeypatch.setattr(weights, "fetch_weights", fail)


@pytest.mark.parametrize("cls_name", ["WeightsUnavailableError", "WeightsHashError"])
def test_registry_model_offline_is_one_line(img2d, capsys, monkeypatch, cls_name):
    offline(monkeypatch, cls_name)
    argv = ["segment", str(img2d / "img.tif"), "--points", str(img2d / "pts.csv")]
    assert main([*argv, "--model", "vit_b", "--out", str(img2d / "o")]) == 2
    assert "Could not download" in one_line_error(capsys, "segment")
    assert main(["models", "--download", "vit_t"]) == 2
    assert "no route" in one_line_error(capsys, "models")
    assert main(["models", "--download", "nope"]) == 2
    assert "valid names" in one_line_error(capsys, "models")


def test_bad_checkpoint_is_one_line(img2d, capsys):
    (img2d / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(segment(img2d, img2d / "bad.pt")) == 2
    assert "bad.pt" in one_line_error(capsys, "segment")


def test_store_write_error_from_amg_and_propagate_is_one_line(tmp_path, tiny_checkpoint, capsys,
                                                              monkeypatch):
    import errno

    from napari_sam.store import EmbeddingStore, StoreWriteError

    def full(self, *a, **k):
        raise StoreWriteError(f"no space left on the device of {self.path}", errno.ENOSPC)

    monkeypatch.setattr(EmbeddingStore, "put", full)
    vol = np.zeros((3, 40, 48), np.uint16)
    vol[:, 8:20, 10:24] = 3000
    tifffile.imwrite(tmp_path / "vol.tif", vol)
    seeds = np.zeros(vol.shape, np.uint8)
    seeds[1, 8:20, 10:24] = 1
    tifffile.imwrite(tmp_path / "seeds.tif", seeds)
    common = ["--model", "tiny", "--checkpoint", str(tiny_checkpoint), "--precision", "fp32",
              "--device", "cpu", "--no-progress", "--store", str(tmp_path / "s.zarr")]
    rc = main(["amg", str(tmp_path / "vol.tif"), "--out", str(tmp_path / "l.tif"), *common])
    assert rc == 2 and "no space left" in one_line_error(capsys, "amg")
    assert not (tmp_path / "l.tif").exists()
    rc = main(["propagate", str(tmp_path / "vol.tif"), "--labels", str(tmp_path / "seeds.tif"),
               "--out", str(tmp_path / "p.tif"), *common])
    assert rc == 2 and "no space left" in one_line_error(capsys, "propagate")


def test_internal_error_exit_1_asks_for_a_report(img2d, tiny_checkpoint, capsys, monkeypatch):
    """A ValueError from inside (a bug) is no longer passed off as the user's error."""
    from napari_sam.engine.embedding import Encoder

    def boom(self, image):
        raise ValueError("boom inside the engine")

    monkeypatch.setattr(Encoder, "__call__", boom)
    monkeypatch.delenv("NAPARI_SAM_DEBUG", raising=False)
    assert main(segment(img2d, tiny_checkpoint)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("napari-sam segment: internal error: ValueError: boom inside")
    assert "please report it" in err[0] and "with the command line" in err[0]
    assert "NAPARI_SAM_DEBUG=1" in err[0]

    monkeypatch.setenv("NAPARI_SAM_DEBUG", "1")
    assert main(segment(img2d, tiny_checkpoint)) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(
        "napari-sam segment: internal error: ValueError"
    )


def test_ctrl_c_is_130(img2d, tiny_checkpoint, capsys, monkeypatch):
    from napari_sam.engine.embedding import Encoder

    def interrupted(self, image):
        raise KeyboardInterrupt

    monkeypatch.setattr(Encoder, "__call__", interrupted)
    assert main(segment(img2d, tiny_checkpoint)) == 130
    assert "cancelled" in capsys.readouterr().err


def test_segment_slice_out_of_range_names_the_valid_range(tmp_path, tiny_checkpoint, capsys):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((4, 40, 48), np.uint16))
    (tmp_path / "pts.csv").write_text("object,row,col\n1,14,17\n")
    assert main(segment(tmp_path, tiny_checkpoint, "--slice", "7", image="stack.tif")) == 2
    line = one_line_error(capsys, "segment")
    assert "--slice index 7 out of range" in line and "valid 0..3" in line
    assert main(segment(tmp_path, tiny_checkpoint, "--slice", "1", "2", image="stack.tif")) == 2
    assert "at most 1 slice index" in one_line_error(capsys, "segment")


def test_segment_very_thin_image_works(tmp_path, tiny_checkpoint, capsys):
    """10000 × 10: the short side no longer rounds to 0 pixels in the model input."""
    img = np.zeros((10000, 10), np.uint16)
    img[3000:7000] = 2000
    tifffile.imwrite(tmp_path / "thin.tif", img)
    (tmp_path / "pts.csv").write_text("object,row,col\n1,5000,5\n")
    assert main(segment(tmp_path, tiny_checkpoint, image="thin.tif")) == 0, capsys.readouterr()
    assert tifffile.imread(tmp_path / "out" / "labels.tif").shape == (10000, 10)


def test_slices_beyond_the_image_are_refused_not_clipped(tmp_path, tiny_checkpoint, capsys):
    from napari_sam.store import SliceLayout, parse_slices

    lay = SliceLayout.for_shape((40, 8, 8))
    for text in ("0:100", "50:", "-41:3", "3,"):
        with pytest.raises(ValueError, match=r"out of range|entries"):
            parse_slices(text, lay)
    assert parse_slices("0:40", lay) == [(z,) for z in range(40)]
    assert parse_slices("-3:", lay) == [(37,), (38,), (39,)]
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((40, 8, 8), np.uint8))
    rc = main(["embed", str(tmp_path / "v.tif"), "--model", "tiny", "--checkpoint",
               str(tiny_checkpoint), "--slices", "0:100", "--out", str(tmp_path / "s.zarr")])
    assert rc == 2
    line = one_line_error(capsys, "embed")
    assert "'0:100' out of range" in line and "40 slices" in line and "0:40" in line
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("bad.tif", b"garbage!", "not a TIFF file"),
        ("bad.npy", b"\x93NUMPY\x01\x00garbage", "cannot read"),
    ],
)
@pytest.mark.parametrize("command", ["segment", "embed"])
def test_unreadable_input_is_one_line(tmp_path, tiny_checkpoint, capsys, name, content,
                                      reason, command):
    (tmp_path / name).write_bytes(content)
    (tmp_path / "pts.csv").write_text("object,row,col\n1,1,1\n")
    if command == "segment":
        argv = segment(tmp_path, tiny_checkpoint, image=name)
    else:
        argv = ["embed", str(tmp_path / name), "--model", "tiny", "--checkpoint",
                str(tiny_checkpoint), "--out", str(tmp_path / "s.zarr")]
    assert main(argv) == 2
    line = one_line_error(capsys, command)
    assert f"cannot read {tmp_path / name}" in line and reason in line


@pytest.mark.parametrize("command", ["segment", "embed"])
def test_permission_denied_on_input_is_one_line(tmp_path, tiny_checkpoint, capsys,
                                                monkeypatch, command):
    """Tests run as root (chmod does not stop reads): inject the PermissionError."""
    np.save(tmp_path / "img.npy", np.zeros((40, 48), np.uint16))
    (tmp_path / "pts.csv").write_text("object,row,col\n1,1,1\n")

    def denied(*_a, **_k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "img.npy"))

    monkeypatch.setattr(np, "load", denied)
    if command == "segment":
        argv = segment(tmp_path, tiny_checkpoint, image="img.npy")
    else:
        argv = ["embed", str(tmp_path / "img.npy"), "--model", "tiny", "--checkpoint",
                str(tiny_checkpoint), "--out", str(tmp_path / "s.zarr")]
    assert main(argv) == 2
    assert f"cannot read {tmp_path / 'img.npy'}: permission denied" in one_line_error(
        capsys, command
    )


def test_help_lists_overwrite_and_exit_codes(capsys):
    for command in ("amg", "propagate", "segment"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--overwrite" in text and "without it nothing is replaced" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "1 internal error, 2 user error, 130 cancelled" in capsys.readouterr().out


def test_user_facing_error_classes_exist():
    """The top level finds these classes by name: a rename must fail here, not turn
    every offline download into an 'internal error'."""
    import importlib

    from napari_sam.cli import USER_FACING

    for module, name in USER_FACING:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, Exception), (module, name)
