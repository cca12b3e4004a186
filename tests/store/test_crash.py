"""Crash safety and resume: kill -9, interrupted writes, disk full, read-only."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr

from napari_sam.engine.decode.predictor import Predictor
from napari_sam.store import EmbeddingStore, StoreWriteError, precompute

from store_helpers import compute, volume

KILL_SCRIPT = """
import sys, numpy as np, torch
torch.set_num_threads(1)
from napari_sam.store import ModelSpec, precompute
img = np.load(sys.argv[1], mmap_mode="r")
spec = ModelSpec("tiny", sys.argv[3], device="cpu", precision="fp32")
for p in precompute(sys.argv[2], img, spec):
    print(p.done, flush=True)
"""


def _run_and_kill(args: list[str], after_lines: int, delay: float) -> int:
    """Start the precompute, SIGKILL it ``delay`` s after it reported ``after_lines``
    progress lines; return how many slices it had reported."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, *args], stdout=subprocess.PIPE, text=True, env=env
    )
    last = 0
    for _ in range(after_lines):
        line = proc.stdout.readline()
        if not line:
            break
        last = int(line)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "precompute finished before the kill"
    return last


def _assert_complete_slices_valid(store, ref) -> list:
    missing = set(store.missing())
    for i in store.layout.indices():
        if i not in missing:
            got = store.get(i)
            assert got is not None, f"slice {i} marked complete but not valid"
            assert torch.equal(got.features, ref[i[0]]), f"slice {i} has wrong values"
    return sorted(missing)


@pytest.mark.slow
def test_kill_9_at_any_moment_then_resume(tmp_path, model, spec):
    img = volume((300, 64, 64))
    np.save(tmp_path / "img.npy", img)
    path = tmp_path / "s.zarr"
    p = Predictor(model)
    ref = [p.compute_embedding(img[i]).features.half().float() for i in range(len(img))]
    args = [str(tmp_path / "img.npy"), str(path), spec.checkpoint]
    for after, delay in [(20, 0.013), (3, 0.071)]:
        _run_and_kill(args, after, delay)
        store = EmbeddingStore.open(path, model, image=img)
        missing = _assert_complete_slices_valid(store, ref)
        assert 0 < len(missing) < len(img)
    steps = list(precompute(path, img, spec))
    assert steps[0].done == len(img) - len(missing)
    assert len(steps) - 1 == len(missing)  # only the missing slices were computed
    assert _assert_complete_slices_valid(EmbeddingStore.open(path, model, image=img), ref) == []


class _FailingMarkers:
    """Stand-in for the marker array: the write after the chunk dies (like a crash)."""

    def __init__(self, real):
        self.real = real

    def __getitem__(self, key):
        return self.real[key]

    def __setitem__(self, key, value):
        if np.any(value):
            raise KeyboardInterrupt("killed between chunk and marker")
        self.real[key] = value


def test_crash_between_chunk_and_marker_leaves_slice_missing(tmp_path, model):
    img = volume()
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    list(compute(store, keys=[(0,), (1,)]))
    store._markers = _FailingMarkers(store._markers)
    with pytest.raises(KeyboardInterrupt):
        list(compute(store))
    assert (tmp_path / "s.zarr/embeddings/c/2/0/0/0").is_file()  # chunk written ...
    again = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    assert again.missing() == [(i,) for i in range(2, 6)]  # ... but never trusted
    assert [s.done for s in compute(again)] == [2, 3, 4, 5, 6]


def _fail_writes(monkeypatch, prefix: str, code: int):
    """Make the zarr local store fail writing keys under ``prefix`` with OSError(code)."""
    real = zarr.storage.LocalStore.set

    async def set_(self, key, value):
        if key.startswith(prefix):
            raise OSError(code, os.strerror(code))
        return await real(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", set_)


@pytest.mark.parametrize("target", ["embeddings/c/3", "complete/c/3"])
def test_disk_full_gives_clear_error_and_consistent_store(tmp_path, model, monkeypatch, target):
    img = volume()
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    with monkeypatch.context() as m:
        _fail_writes(m, target, errno.ENOSPC)
        with pytest.raises(StoreWriteError, match=r"no space left .* slice \(3,\)") as info:
            list(compute(store))
        assert info.value.errno == errno.ENOSPC
    assert store.missing() == [(3,), (4,), (5,)]
    assert all(store.get(i) is not None for i in range(3))
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))
    assert [s.done for s in compute(store)] == [3, 4, 5, 6]  # space freed: resume


def test_failed_overwrite_never_serves_the_old_marker(tmp_path, model, monkeypatch):
    img = volume()
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    list(compute(store))
    emb = Predictor(model).compute_embedding(img[0])  # any valid embedding
    with monkeypatch.context() as m:
        _fail_writes(m, "embeddings/c/4", errno.EIO)
        with pytest.raises(StoreWriteError, match="cannot write"):
            store.put(4, emb)
    assert store.missing() == [(4,)]


def test_read_only_store(tmp_path, model):
    img = volume()
    list(compute(EmbeddingStore.open(tmp_path / "s.zarr", model, image=img), keys=[(0,)]))
    before = sorted(p.name for p in (tmp_path / "s.zarr").rglob("*"))
    ro = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img, mode="r")
    assert ro.get(0) is not None
    emb = Predictor(model).compute_embedding(img[1])
    with pytest.raises(StoreWriteError, match="read-only"):
        ro.put(1, emb)
    with pytest.raises(StoreWriteError, match="read-only"):
        list(compute(ro))
    assert sorted(p.name for p in (tmp_path / "s.zarr").rglob("*")) == before


def test_read_only_file_system(tmp_path, model, monkeypatch):
    img = volume()
    with monkeypatch.context() as m:
        _fail_writes(m, "", errno.EROFS)
        with pytest.raises(StoreWriteError, match="read-only"):
            EmbeddingStore.open(tmp_path / "new.zarr", model, image=img)
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    list(compute(store, keys=[(0,)]))
    with monkeypatch.context() as m:
        _fail_writes(m, "", errno.EROFS)
        with pytest.raises(StoreWriteError, match=r"read-only \(Read-only file system\)"):
            list(compute(store))
    assert store.missing() == [(i,) for i in range(1, 6)] and store.get(0) is not None


def test_read_only_directory(tmp_path, model, monkeypatch):
    """A directory the process may not write to: the EACCES that ``chmod 555`` gives a
    normal user, injected at the file-system calls zarr's local store makes (open for
    writing, mkdir), so that the test runs as root (CI) too."""
    img = volume()
    path = tmp_path / "s.zarr"
    store = EmbeddingStore.open(path, model, image=img)
    cls = type(path)
    real_open, real_mkdir = cls.open, cls.mkdir

    def denied(p):
        return str(p).startswith(str(path))

    def open_(self, mode="r", *args, **kwargs):
        if denied(self) and any(c in mode for c in "wax+"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, mode, *args, **kwargs)

    def mkdir(self, *args, **kwargs):
        if denied(self) and not self.is_dir():
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(cls, "open", open_)
        m.setattr(cls, "mkdir", mkdir)
        with pytest.raises(StoreWriteError, match=r"read-only \(Permission denied\)"):
            list(compute(store))
    assert store.missing() == [(i,) for i in range(6)]
    assert not list(path.rglob("*.partial"))


def test_damaged_files_are_not_trusted(tmp_path, model):
    img = volume()
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    list(compute(store))
    chunk = tmp_path / "s.zarr/embeddings/c/1/0/0/0"
    raw = bytearray(chunk.read_bytes())
    raw[100] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    assert store.get(1) is None  # checksum in the marker catches it
    (tmp_path / "s.zarr/complete/c/2/0").write_bytes(b"\x00" * 7)  # torn marker
    assert store.missing() == [(2,)] and store.get(2) is None
    assert [s.done for s in compute(store, verify=True, keys=[(1,), (2,)])] == [0, 1, 2]
    assert store.get(1) is not None and store.get(2) is not None


def test_interrupted_creation_is_repaired(tmp_path, model):
    img = volume()
    store = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)
    attrs = dict(store.attrs)
    (tmp_path / "s.zarr").rename(tmp_path / "old.zarr")
    zarr.open_group(tmp_path / "s.zarr", mode="w", attributes={"napari_sam": attrs})
    again = EmbeddingStore.open(tmp_path / "s.zarr", model, image=img)  # arrays re-created
    assert len(again.missing()) == 6 and list(compute(again))[-1].done == 6
