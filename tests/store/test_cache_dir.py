"""The default cache directory: use marks, in-use holds, the size cap (LRU) and what
clean-up never touches."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_sam.store import EmbeddingStore, store_info
from napari_sam.store import cache_dir as cd

from store_helpers import compute, volume

DAY = 86400.0


def make_store(root: Path, name: str, model, slices: int = 1, shape=(3, 20, 24)) -> Path:
    """A real napari-sam store with ``slices`` slices computed."""
    path = root / name
    store = EmbeddingStore.open(path, model, image=volume(shape))
    for _ in compute(store, keys=[(i,) for i in range(slices)]):
        pass
    return path


def age(path: Path, when: float) -> None:
    """Set the mtime of every file and directory of a store to ``when``."""
    for dirpath, dirnames, filenames in os.walk(path):
        for n in [*dirnames, *filenames]:
            os.utime(Path(dirpath) / n, (when, when))
    os.utime(path, (when, when))


@pytest.fixture
def stores(tmp_path, model):
    """Four stores in a cache root, last used 4, 3, 2 and 1 days ago (oldest first;
    their names are not in that order)."""
    root = tmp_path / "embeddings"
    now = time.time()
    paths = [make_store(root, f"{n}.zarr", model) for n in "cadb"]
    for i, p in enumerate(paths):
        age(p, now - (4 - i) * DAY)
    return root, paths


def _names(entries) -> list[str]:
    return [e.path.name for e in entries]


def _n(*paths: Path) -> list[str]:
    return [p.name for p in paths]


def test_scan_lists_stores_oldest_first_with_sizes(stores):
    root, paths = stores
    scan = cd.scan(root)
    assert _names(scan.entries) == _n(*paths) == ["c.zarr", "a.zarr", "d.zarr", "b.zarr"]
    e = scan.entries[0]
    files = [p for p in paths[0].rglob("*") if p.is_file()]
    assert e.size == sum(p.stat().st_size for p in files) > 0
    assert e.attrs["model"]["name"] == "tiny" and not e.in_use
    assert scan.total == sum(x.size for x in scan.entries)


def test_mark_used_moves_a_store_to_the_end_and_zarr_stays_quiet(stores):
    root, paths = stores
    assert cd.mark_used(paths[0])
    assert _names(cd.scan(root).entries) == _n(*paths[1:], paths[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the usage sub-group is a valid zarr node
        assert store_info(paths[0])["slices_complete"] == 1
        assert set(zarr.open_group(paths[0], mode="r").array_keys()) == {"embeddings", "complete"}
    other = root / "not-a-store"
    assert not cd.mark_used(other) and not other.exists()


def test_enforce_cap_removes_least_recently_used_first(stores):
    root, paths = stores
    sizes = {e.path.name: e.size for e in cd.scan(root).entries}
    cap = sizes[paths[2].name] + sizes[paths[3].name]
    result = cd.enforce_cap(root, cap)
    assert _names(result.removed) == _n(*paths[:2])
    assert result.freed == sizes[paths[0].name] + sizes[paths[1].name] and not result.failed
    assert [p.exists() for p in paths] == [False, False, True, True]
    assert result.total_after == cd.scan(root).total <= cap
    assert sorted(os.listdir(root)) == sorted(_n(*paths[2:]))  # nothing renamed left over
    assert cd.enforce_cap(root, cap).removed == []  # already under the cap


def test_keep_and_in_use_are_never_removed(stores, model):
    root, paths = stores
    hold = cd.hold_store(paths[1])
    assert hold.locked and cd.in_use(paths[1])
    result = cd.enforce_cap(root, 1, keep=[str(paths[0])])
    assert _names(result.kept) == _n(*paths[:2])
    assert _names(result.removed) == _n(*paths[2:])
    assert paths[0].exists() and paths[1].exists()
    hold.release()
    assert not cd.in_use(paths[1]) and not list((paths[1] / "usage").glob("*.lock"))
    assert _names(cd.enforce_cap(root, 1, keep=[paths[0]]).removed) == _n(paths[1])


def test_foreign_entries_are_never_touched(tmp_path, stores, model):
    root, paths = stores
    outside = make_store(tmp_path / "elsewhere", "mine.zarr", model)
    (root / "link.zarr").symlink_to(outside, target_is_directory=True)
    other_zarr = zarr.open_group(root / "other.zarr", mode="w")
    other_zarr.attrs["napari_sam"] = {"kind": "labels"}  # zarr, but not an embedding store
    (root / "notes").mkdir()
    (root / "notes" / "a.txt").write_text("keep me")
    (root / "readme.txt").write_text("keep me")
    scan = cd.scan(root)
    assert {p.name for p in scan.foreign} == {"link.zarr", "other.zarr", "notes", "readme.txt"}
    result = cd.clean(root, everything=True)
    assert len(result.removed) == 4 and not any(p.exists() for p in paths)
    assert sorted(os.listdir(root)) == ["link.zarr", "notes", "other.zarr", "readme.txt"]
    assert store_info(outside)["slices_complete"] == 1
    assert (root / "notes" / "a.txt").read_text() == "keep me"


def test_older_than_and_dry_run(stores):
    root, paths = stores
    dry = cd.clean(root, older_than_days=2.5, dry_run=True)
    assert _names(dry.removed) == _n(*paths[:2]) and dry.dry_run
    assert all(p.exists() for p in paths)
    assert dry.freed == sum(e.size for e in dry.removed) and dry.total_after < dry.total_before
    done = cd.clean(root, older_than_days=2.5)
    assert _names(done.removed) == _n(*paths[:2])
    assert [p.exists() for p in paths] == [False, False, True, True]
    assert cd.clean(root).removed == []  # no criterion: nothing selected


def test_interrupted_deletion_leftover_goes_first(stores, model):
    root, paths = stores
    debris = make_store(root, "old.zarr.deleting-0123abcd", model)
    result = cd.enforce_cap(root, 10**12)  # far under the cap
    assert _names(result.removed) == ["old.zarr.deleting-0123abcd"] and not debris.exists()
    assert all(p.exists() for p in paths)


def test_failures_are_reported_and_leave_the_store(stores, monkeypatch):
    root, paths = stores

    def refuse(self, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "rename", refuse)
    result = cd.clean(root, everything=True)
    assert not result.removed and len(result.failed) == 4
    assert "Permission denied" in result.failed[0][1]
    assert all(store_info(p)["slices_complete"] == 1 for p in paths)


def test_a_holder_arriving_during_removal_keeps_the_store(stores, monkeypatch):
    """in_use is checked before and after the rename; a late holder gets it back."""
    root, paths = stores
    answers = iter([False, True])
    monkeypatch.setattr(cd, "in_use", lambda path: next(answers))
    result = cd._remove(paths[0])
    assert result == "in use"
    assert sorted(os.listdir(root)) == sorted(_n(*paths))


def test_hold_from_another_process_and_its_crash(stores):
    root, paths = stores
    code = textwrap.dedent(
        f"""
        import sys, time
        from napari_sam.store.cache_dir import hold_store
        h = hold_store({str(paths[0])!r})
        print("held" if h.locked else "no", flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        assert cd.in_use(paths[0])
        assert _names(cd.clean(root, everything=True).kept) == _n(paths[0])
        assert paths[0].exists()
    finally:
        proc.kill()  # a crash: the OS drops the lock, the lock file stays
        proc.wait()
    assert list((paths[0] / "usage").glob("in-use-*.lock"))
    assert not cd.in_use(paths[0])
    assert _names(cd.clean(root, everything=True).removed) == _n(paths[0])


def test_hold_is_released_by_garbage_collection(stores):
    root, paths = stores
    hold = cd.hold_store(paths[2])
    assert cd.in_use(paths[2])
    del hold
    assert not cd.in_use(paths[2])
    assert not cd.hold_store(root / "missing.zarr").locked


def test_cap_configuration(monkeypatch):
    assert cd.cache_cap_bytes({}) == 20 * 10**9
    assert cd.cache_cap_bytes({cd.CAP_ENV_VAR: "5"}) == 5 * 10**9
    assert cd.cache_cap_bytes({cd.CAP_ENV_VAR: " 0.5 "}) == 5 * 10**8
    assert cd.cache_cap_bytes({cd.CAP_ENV_VAR: "0"}) is None
    for bad in ("abc", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="NAPARI_SAM_CACHE_MAX_GB"):
            cd.cache_cap_bytes({cd.CAP_ENV_VAR: bad})


def test_enforce_cap_defaults_to_the_default_root_and_env_cap(tmp_path, monkeypatch, model):
    monkeypatch.setenv("NAPARI_SAM_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "embeddings"
    a, b = make_store(root, "a.zarr", model), make_store(root, "b.zarr", model)
    age(a, time.time() - DAY)
    monkeypatch.setenv(cd.CAP_ENV_VAR, "0")
    assert cd.enforce_cap().removed == []  # cap off
    monkeypatch.setenv(cd.CAP_ENV_VAR, str(cd.scan(root).entries[-1].size / 1e9))
    assert _names(cd.enforce_cap(keep=[b]).removed) == ["a.zarr"]
    assert b.exists() and np.isclose(cd.scan().total, cd.scan(root).total)
