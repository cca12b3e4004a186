"""Results are written atomically and never replaced unless asked (napari_sam.outputs and
the command line): a full disk or a read-only folder leaves the previous result intact,
no temporary file, and one line on stderr. Tests run as root in CI, where chmod does not
stop writes, so the OS errors are injected into the writers."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sam.cli import main
from napari_sam.outputs import (
    OutputExistsError,
    OutputWriteError,
    atomic_dir,
    atomic_file,
    check_target,
)

FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary names the writers use (.NAME.XXXX.tmp.SUFFIX / .old)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def fail_with(code: int, partial: Path | None = None):
    """A writer that starts writing, then hits ``code`` (e.g. ENOSPC)."""

    def writer(path, *_a, **_k):
        target = partial or Path(path)
        target.write_bytes(b"torn")
        raise OSError(code, {errno.ENOSPC: "No space left on device",
                             errno.EROFS: "Read-only file system"}.get(code, "error"))

    return writer


# ------------------------------------------------------------------ the module itself
def test_atomic_file_replaces_only_when_asked(tmp_path):
    out = tmp_path / "sub" / "a.npy"
    with atomic_file(out) as tmp:
        assert tmp.parent == out.parent and tmp.suffix == ".npy" and tmp != out
        np.save(tmp, np.arange(3))
    assert np.load(out).tolist() == [0, 1, 2]
    with pytest.raises(OutputExistsError, match="exists"), atomic_file(out) as tmp:
        raise AssertionError("not reached")
    with atomic_file(out, overwrite=True) as tmp:
        np.save(tmp, np.arange(4))
    assert np.load(out).tolist() == [0, 1, 2, 3]
    assert leftovers(out.parent) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_atomic_file_failure_keeps_the_previous_file(tmp_path, code):
    out = tmp_path / "a.tif"
    out.write_bytes(b"previous result")
    with pytest.raises(OutputWriteError) as info, atomic_file(out, overwrite=True) as tmp:
        fail_with(code)(tmp)
    msg = str(info.value)
    assert str(out) in msg and "\n" not in msg and "is unchanged" in msg
    assert {errno.ENOSPC: "no space", errno.EROFS: "read-only", errno.EACCES: "permission"}[
        code
    ] in msg
    assert out.read_bytes() == b"previous result" and leftovers(tmp_path) == []


def test_atomic_file_other_errors_pass_through_after_clean_up(tmp_path):
    with pytest.raises(KeyError), atomic_file(tmp_path / "a.png") as tmp:
        tmp.write_bytes(b"half")
        raise KeyError("a bug")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_moves_the_old_one_aside_until_the_new_one_is_in_place(tmp_path):
    out = tmp_path / "l.zarr"
    (out / "c").mkdir(parents=True)
    (out / "c" / "0").write_text("old")
    with pytest.raises(OutputExistsError), atomic_dir(out):
        pass
    with pytest.raises(OutputWriteError, match="no space"), atomic_dir(out, overwrite=True) as t:
        (t / "x").write_text("new, torn")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (out / "c" / "0").read_text() == "old" and leftovers(tmp_path) == []
    with atomic_dir(out, overwrite=True) as t:
        assert t.is_dir() and not any(t.iterdir())
        (t / "x").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["x"] and leftovers(tmp_path) == []


def test_atomic_dir_puts_the_old_one_back_when_the_rename_fails(tmp_path, monkeypatch):
    import os

    out = tmp_path / "l.zarr"
    out.mkdir()
    (out / "keep").write_text("old")
    real = os.replace

    def replace(src, dst):
        if Path(dst) == out and ".tmp" in Path(src).name:
            raise OSError(errno.EACCES, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputWriteError, match="permission denied"):
        with atomic_dir(out, overwrite=True) as t:
            (t / "new").write_text("new")
    assert (out / "keep").read_text() == "old" and leftovers(tmp_path) == []


def test_check_target_names_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(OutputWriteError, match="is a file, not a folder") as info:
        check_target(tmp_path / "f" / "sub" / "l.tif")
    assert info.value.errno == errno.ENOTDIR
    assert check_target(tmp_path / "new" / "l.tif") == tmp_path / "new" / "l.tif"
    assert not (tmp_path / "new").exists()  # nothing created before the work succeeded


# ------------------------------------------------------------------ the command line
@pytest.fixture
def img(tmp_path):
    a = np.zeros((40, 48), np.uint16)
    a[8:20, 10:24] = 3000
    tifffile.imwrite(tmp_path / "img.tif", a)
    return tmp_path / "img.tif"


def amg(img, out, ckpt, *extra):
    return ["amg", str(img), "--model", "tiny", "--checkpoint", str(ckpt), "--out", str(out),
            "--precision", "fp32", "--device", "cpu", "--no-progress", *FAST, *extra]


def error_line(capsys, command):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"napari-sam {command}: error: "), err
    return err[0]


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".zarr"])
def test_existing_output_needs_overwrite(img, tiny_checkpoint, capsys, suffix):
    out = img.parent / f"labels{suffix}"
    assert main(amg(img, out, tiny_checkpoint)) == 0, capsys.readouterr().err
    before = sorted(p.name for p in img.parent.rglob("*"))
    capsys.readouterr()
    assert main(amg(img, out, tiny_checkpoint)) == 2
    assert error_line(capsys, "amg").endswith(f"{out} exists; use --overwrite or another --out")
    assert sorted(p.name for p in img.parent.rglob("*")) == before
    assert main(amg(img, out, tiny_checkpoint, "--overwrite")) == 0
    assert leftovers(img.parent) == []


@pytest.mark.parametrize(
    ("suffix", "target", "code", "words"),
    [
        (".tif", "tifffile.imwrite", errno.ENOSPC, "no space left"),
        (".npy", "numpy.save", errno.ENOSPC, "no space left"),
        (".tif", "tifffile.imwrite", errno.EROFS, "read-only file system"),
        (".zarr", "zarr.create_array", errno.ENOSPC, "no space left"),
    ],
)
def test_full_disk_keeps_the_previous_labels(img, tiny_checkpoint, capsys, monkeypatch,
                                             suffix, target, code, words):
    out = img.parent / f"labels{suffix}"
    assert main(amg(img, out, tiny_checkpoint)) == 0
    snapshot = {p: p.read_bytes() for p in [out, *out.rglob("*")] if p.is_file()}
    capsys.readouterr()
    module, name = target.rsplit(".", 1)

    def failing(*a, **k):
        path = Path(k["store"] if "store" in k else a[0])
        if path.is_dir():
            path = path / "zarr.json"
        return fail_with(code, path)(path)

    monkeypatch.setattr(__import__(module), name, failing)
    assert main(amg(img, out, tiny_checkpoint, "--overwrite")) == 2
    line = error_line(capsys, "amg")
    assert f"cannot write {out}: {words}" in line and "is unchanged" in line
    assert {p: p.read_bytes() for p in [out, *out.rglob("*")] if p.is_file()} == snapshot
    assert leftovers(img.parent) == []


def test_out_under_a_file_fails_before_any_work(img, tiny_checkpoint, capsys, monkeypatch):
    from napari_sam.cli import common

    def never(*_a):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(common, "load_model", never)
    (img.parent / "notes.txt").write_text("x")
    out = img.parent / "notes.txt" / "labels.tif"
    assert main(amg(img, out, tiny_checkpoint)) == 2
    line = error_line(capsys, "amg")
    assert f"cannot write {out}" in line and "notes.txt is a file, not a folder" in line
    assert main(amg(img, img.parent / "l.tif", tiny_checkpoint)) == 1  # reached the model


def test_segment_folder_applies_the_rule_per_file(img, tiny_checkpoint, capsys, monkeypatch):
    (img.parent / "pts.csv").write_text("object,row,col\n1,14,17\n")
    out = img.parent / "res"
    argv = ["segment", str(img), "--points", str(img.parent / "pts.csv"), "--model", "tiny",
            "--checkpoint", str(tiny_checkpoint), "--precision", "fp32", "--out", str(out)]
    out.mkdir()
    (out / "overlay.png").write_bytes(b"earlier overlay")
    assert main(argv) == 2
    assert error_line(capsys, "segment").endswith(
        f"{out / 'overlay.png'} exists; use --overwrite or another --out"
    )
    assert not (out / "labels.tif").exists()  # refused before anything was written
    assert main([*argv, "--overwrite"]) == 0
    assert tifffile.imread(out / "labels.tif").shape == (40, 48)
    assert (out / "overlay.png").read_bytes()[:4] == b"\x89PNG"

    # a full disk while writing the overlay: the earlier one is intact, no temp file
    from PIL import Image

    before = (out / "overlay.png").read_bytes()
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: fail_with(
        errno.ENOSPC)(fp))
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    assert "overlay.png: no space left" in error_line(capsys, "segment")
    assert (out / "overlay.png").read_bytes() == before and leftovers(out) == []


def test_propagate_and_train_outputs_need_overwrite(tmp_path, tiny_checkpoint, capsys):
    vol = np.zeros((3, 40, 48), np.uint16)
    tifffile.imwrite(tmp_path / "vol.tif", vol)
    seeds = np.zeros(vol.shape, np.uint8)
    seeds[1, 5:9, 5:9] = 1
    tifffile.imwrite(tmp_path / "seeds.tif", seeds)
    (tmp_path / "p.tif").write_bytes(b"earlier")
    rc = main(["propagate", str(tmp_path / "vol.tif"), "--labels", str(tmp_path / "seeds.tif"),
               "--out", str(tmp_path / "p.tif"), "--checkpoint", str(tiny_checkpoint)])
    assert rc == 2 and "p.tif exists; use --overwrite" in error_line(capsys, "propagate")
    assert (tmp_path / "p.tif").read_bytes() == b"earlier"
    (tmp_path / "m.pt").write_bytes(b"earlier model")
    assert main(["train", "--synthetic", "1", "--out", str(tmp_path / "m.pt")]) == 2
    assert "m.pt exists; use --overwrite" in error_line(capsys, "train")
    assert (tmp_path / "m.pt").read_bytes() == b"earlier model"


def test_train_full_disk_is_one_line(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    from napari_sam.training import loop

    def full(path, *_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop, "save_checkpoint", full)
    out = tmp_path / "m.pt"
    rc = main(["train", "--synthetic", "1", "--init", str(tiny_checkpoint), "--out", str(out),
               "--steps", "1", "--batch-images", "1", "--objects", "2"])
    assert rc == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("napari-sam train: error: cannot write")
    assert "no space left on the device" in line and "--resume" in line
