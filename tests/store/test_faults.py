"""Damaged and unreadable stores: truncated / garbage chunks and metadata, read errors,
leftovers of interrupted removals, and what a mismatch error tells the user."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import warnings

import pytest
import zarr

from napari_sam.engine.image import Normalization
from napari_sam.store import (
    EmbeddingStore,
    StoreCleanupWarning,
    StoreDamagedError,
    StoreMismatchError,
    StoreReadError,
    store_info,
)

from store_helpers import compute, make_tiny, volume


def _filled(path, model, img):
    store = EmbeddingStore.open(path, model, image=img)
    list(compute(store))
    return store


def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_mismatch_names_every_difference_and_both_ways_out_and_deletes_nothing(tmp_path, model):
    img = volume()
    path = tmp_path / "s.zarr"
    _filled(path, model, img)
    before = _snapshot(path)
    other = make_tiny(seed=1)
    norm = Normalization(contrast_limits=(0, 1000))
    for mode in ("a", "r+", "r"):
        with pytest.raises(StoreMismatchError) as err:
            EmbeddingStore.open(path, other, image=img, normalization=norm, dtype="float32",
                                mode=mode)
        msg = str(err.value)
        for what in ("model weights (checkpoint)", "intensity normalisation", "storage dtype"):
            assert what in msg
        assert "another store path" in msg
        assert "--overwrite on the command line, on_mismatch='overwrite' in Python" in msg
    with pytest.raises(StoreMismatchError, match="mode='r\\+' never replaces"):
        EmbeddingStore.open(path, other, image=img, mode="r+", on_mismatch="overwrite")
    assert _snapshot(path) == before  # not a byte changed
    assert EmbeddingStore.open(path, model, image=img).missing() == []


@pytest.mark.parametrize("size", [500, 0, 4097])
def test_truncated_embedding_chunk_is_a_missing_slice(tmp_path, model, size, capsys):
    img = volume()
    store = _filled(tmp_path / "s.zarr", model, img)
    chunk = tmp_path / "s.zarr/embeddings/c/1/0/0/0"
    raw = chunk.read_bytes()
    chunk.write_bytes((raw * 2)[:size])  # power cut: short (or over-long) file
    assert store.get(1) is None  # not "cannot reshape array of size 250"
    assert store.missing() == [(1,)]
    info = store_info(tmp_path / "s.zarr")
    assert (info["slices_complete"], info["slices_damaged"]) == (5, 1)
    assert store.info() == info
    from napari_sam.cli import main

    assert main(["info", str(tmp_path / "s.zarr")]) == 0
    assert "5/6 slices (1 damaged" in capsys.readouterr().out
    steps = list(compute(store, verify=True))
    assert [s.done for s in steps] == [5, 6]  # only the damaged slice recomputed
    assert store.get(1) is not None and store.missing() == []


@pytest.mark.parametrize("garbage", [b"\x01" * 7, b"NSC1" + b"\xff" * 40, b"", b"\x00" * 32])
def test_garbage_marker_chunk_is_a_missing_slice(tmp_path, model, garbage):
    img = volume((12, 40, 50))  # > 8 slices: the markers are read in one go
    store = _filled(tmp_path / "s.zarr", model, img)
    (tmp_path / "s.zarr/complete/c/2/0").write_bytes(garbage)
    assert store.missing() == [(2,)] and store.get(2) is None
    info = store_info(tmp_path / "s.zarr")
    assert (info["slices_complete"], info["slices_total"]) == (11, 12)
    assert [s.done for s in compute(store)] == [11, 12]


def test_store_info_on_a_garbage_marker_prints_nothing_else(tmp_path, model):
    """The whole `info` process: one result, no asyncio "Task was destroyed" noise."""
    img = volume((12, 40, 50))
    _filled(tmp_path / "s.zarr", model, img)
    (tmp_path / "s.zarr/complete/c/5/0").write_bytes(b"garbage")
    code = "import sys; from napari_sam.store import store_info; " \
           "print(store_info(sys.argv[1])['slices_complete'])"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.zarr")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "11"
    assert "Task was destroyed" not in run.stderr and "Traceback" not in run.stderr


def _edit_attrs(path, **changes):
    meta = path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["napari_sam"].update(changes)
    meta.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "damage",
    [
        "truncate",
        "garbage",
        {"input_size": "abc"},
        {"storage_dtype": 5},
        {"image": None},
        {"model": {"name": "tiny"}},
        {"normalization": {"contrast_limits": "x", "percentiles": [1, 99]}},
        {"store_id": 7},
    ],
)
def test_damaged_metadata_is_a_clear_error_and_only_overwrite_replaces_it(
    tmp_path, model, damage
):
    img = volume()
    path = tmp_path / "s.zarr"
    _filled(path, model, img)
    meta = path / "zarr.json"
    if damage == "truncate":
        meta.write_bytes(meta.read_bytes()[:300])
    elif damage == "garbage":
        meta.write_bytes(os.urandom(200))
    else:
        _edit_attrs(path, **damage)
    before = _snapshot(path)
    for call in (
        lambda: store_info(path),
        lambda: EmbeddingStore.open(path, model, image=img),
        lambda: EmbeddingStore.open(path, model, mode="r"),
    ):
        with pytest.raises(StoreDamagedError, match=r"metadata of the embedding store .* damaged"):
            call()
    assert _snapshot(path) == before  # nothing deleted without the user's say-so
    fresh = EmbeddingStore.open(path, model, image=img, on_mismatch="overwrite")
    assert fresh.missing() == [(i,) for i in range(6)]
    assert store_info(path)["slices_complete"] == 0


def test_damaged_metadata_of_something_else_is_never_replaced(tmp_path, model):
    path = tmp_path / "data"
    path.mkdir()
    (path / "zarr.json").write_text("{ not json")
    (path / "notes.txt").write_text("precious")
    with pytest.raises(StoreDamagedError):
        EmbeddingStore.open(path, model, image=volume(), on_mismatch="overwrite")
    assert (path / "notes.txt").read_text() == "precious"
    assert (path / "zarr.json").read_text() == "{ not json"


def _fail_reads(monkeypatch, prefix: str, exc: OSError):
    real = zarr.storage.LocalStore.get

    async def get(self, key, *args, **kwargs):
        if key.startswith(prefix):
            raise exc
        return await real(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", get)


@pytest.mark.parametrize("prefix", ["complete/c/1", "embeddings/c/1"])
@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO])
def test_read_errors_are_reported_not_turned_into_missing_slices(
    tmp_path, model, monkeypatch, prefix, code
):
    img = volume()
    store = _filled(tmp_path / "s.zarr", model, img)
    exc = PermissionError if code == errno.EACCES else OSError
    with monkeypatch.context() as m:
        _fail_reads(m, prefix, exc(code, os.strerror(code)))
        with pytest.raises(StoreReadError, match=r"slice \(1,\).*I/O or permission problem"):
            store.get(1)
        if prefix.startswith("complete"):
            with pytest.raises(StoreReadError, match="I/O or permission problem"):
                store.missing([(1,)])
    assert store.get(1) is not None  # readable again: nothing was invalidated


def test_unreadable_metadata_is_a_read_error(tmp_path, model, monkeypatch):
    img = volume()
    path = tmp_path / "s.zarr"
    _filled(path, model, img)
    real = type(path).read_bytes

    def read_bytes(self):
        if self.name == "zarr.json" and self.parent == path:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self)

    monkeypatch.setattr(type(path), "read_bytes", read_bytes)
    for call in (lambda: store_info(path), lambda: EmbeddingStore.open(path, model, image=img)):
        with pytest.raises(StoreReadError, match="I/O or permission problem"):
            call()


def test_leftovers_of_interrupted_removals_and_creations_are_cleaned(tmp_path, model):
    img = volume()
    path = tmp_path / "s.zarr"
    _filled(path, model, img)
    trash = tmp_path / "s.zarr.deleting-0123abcd"
    (trash / "embeddings").mkdir(parents=True)
    (trash / "embeddings" / "chunk").write_bytes(b"x" * 100)
    stale = tmp_path / "s.zarr.creating-0123abcd"
    fresh = tmp_path / "s.zarr.creating-4567cdef"
    for d in (stale, fresh):
        d.mkdir()
        (d / "zarr.json").write_text("{}")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    other = tmp_path / "t.zarr.deleting-0123abcd"  # another store's: not ours to judge
    other.mkdir()
    notes = tmp_path / "s.zarr.deleting-notes"  # not a name napari-sam makes
    notes.write_text("keep")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to report
        EmbeddingStore.open(path, model, image=img)
    assert not trash.exists() and not stale.exists()
    assert fresh.exists()  # a creation may be running right now
    assert other.exists() and notes.read_text() == "keep"


def test_failure_to_delete_an_old_store_is_reported_and_retried(tmp_path, model, monkeypatch):
    img = volume()
    path = tmp_path / "s.zarr"
    _filled(path, model, img)
    real_unlink = os.unlink

    def unlink(name, *args, **kwargs):  # shutil.rmtree's calls (relative to a dir fd)
        if kwargs.get("dir_fd") is not None:
            raise PermissionError(errno.EACCES, "Permission denied", name)
        return real_unlink(name, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "unlink", unlink)
        with pytest.warns(StoreCleanupWarning, match=r"could not delete .*s\.zarr\.deleting-"):
            fresh = EmbeddingStore.open(path, make_tiny(1), image=img, on_mismatch="overwrite")
    assert os.unlink is real_unlink
    assert len(fresh.missing()) == 6  # the new store is fine
    assert len(list(tmp_path.glob("s.zarr.deleting-*"))) == 1  # reported, still there
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EmbeddingStore.open(path, make_tiny(1), image=img)  # next open cleans it
    assert not list(tmp_path.glob("s.zarr.deleting-*"))
