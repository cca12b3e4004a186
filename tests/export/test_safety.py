"""Exports are written under a temporary name and renamed: an existing export is
replaced only when asked, a folder that is not an export never, and a full disk /
read-only target gives ONE clear error with the previous export intact (the OSError is
injected: the tests run as root, so chmod protects nothing)."""

from __future__ import annotations

import errno

import ngff_zarr as nz
import numpy as np
import pytest
import tifffile

from napari_sam.export import ExportError, export_labels
from napari_sam.export.ome_zarr import read_ome_zarr


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("name", ["a.tif", "a.ome.zarr"])
def test_existing_export_replaced_only_when_asked(tmp_path, labels3d, cal3d, name) -> None:
    out = tmp_path / name
    export_labels(out, labels3d, cal3d)
    with pytest.raises(ExportError, match="exists"):
        export_labels(out, labels3d[:, ::-1].copy(), cal3d)
    export_labels(out, labels3d[:, ::-1].copy(), cal3d, overwrite=True)
    back = tifffile.imread(out) if name.endswith(".tif") else np.asarray(read_ome_zarr(out).data)
    np.testing.assert_array_equal(back, labels3d[:, ::-1])
    assert _leftovers(tmp_path) == []


def test_a_folder_that_is_not_an_export_is_never_replaced(tmp_path, labels3d) -> None:
    folder = tmp_path / "mine.zarr"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a napari-sam export"):
        export_labels(folder, labels3d, overwrite=True)
    assert (folder / "precious.txt").read_text() == "keep me"


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_tiff_keeps_previous_file(tmp_path, labels3d, cal3d, monkeypatch) -> None:
    out = tmp_path / "a.tif"
    export_labels(out, labels3d, cal3d, table=False)
    before = out.read_bytes()
    real_write = tifffile.TiffWriter.write

    def write(self, *args, **kwargs):  # some bytes reach the disk, then it is full
        self._fh.write(b"\0" * 4096)
        _enospc()
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffWriter, "write", write)
    with pytest.raises(ExportError) as info:
        export_labels(out, labels3d + 1, cal3d, overwrite=True, table=False)
    msg = str(info.value)
    assert "No space left on device" in msg and str(out) in msg and "\n" not in msg
    assert out.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_full_disk_ome_zarr_keeps_previous_export(tmp_path, labels3d, cal3d, monkeypatch) -> None:
    out = tmp_path / "a.ome.zarr"
    export_labels(out, labels3d, cal3d, table=False)
    real = nz.to_ngff_zarr

    def to_ngff_zarr(store, *args, **kwargs):  # writes everything, then the disk is full
        real(store, *args, **kwargs)
        _enospc()

    monkeypatch.setattr(nz, "to_ngff_zarr", to_ngff_zarr)
    with pytest.raises(ExportError, match="No space left on device"):
        export_labels(out, labels3d * 0 + 5, cal3d, overwrite=True, table=False)
    np.testing.assert_array_equal(np.asarray(read_ome_zarr(out).data), labels3d)
    assert _leftovers(tmp_path) == []


def test_read_only_target_is_one_clear_error(tmp_path, labels3d, monkeypatch) -> None:
    def mkdir(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("pathlib.Path.mkdir", mkdir)
    with pytest.raises(ExportError, match=r"Read-only file system.*writable folder"):
        export_labels(tmp_path / "sub" / "x.tif", labels3d)


def test_table_failure_leaves_no_partial_csv(tmp_path, labels3d, monkeypatch) -> None:
    import napari_sam.export.atomic as atomic

    real = atomic.os.fsync

    def fsync(fd):
        real(fd)
        _enospc()

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(ExportError, match=r"objects\.csv"):
        export_labels(tmp_path / "x.ome.zarr", labels3d)
    assert not (tmp_path / "x.objects.csv").exists()
    assert _leftovers(tmp_path) == []


def test_unknown_suffix_is_refused(tmp_path, labels3d) -> None:
    with pytest.raises(ExportError, match=r"use \.ome\.zarr"):
        export_labels(tmp_path / "x.png", labels3d)
