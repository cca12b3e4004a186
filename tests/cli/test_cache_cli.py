"""``napari-sam cache list`` / ``napari-sam cache clean``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from napari_sam.cli import main
from napari_sam.store import EmbeddingProvider, EmbeddingStore
from napari_sam.store.cache_dir import hold_store, scan

DAY = 86400.0


@pytest.fixture
def cache(tmp_path, monkeypatch, tiny_model):
    """A cache dir ($NAPARI_SAM_CACHE_DIR) with three stores, oldest first: old.zarr
    (10 days, 1/3 slices), mid.zarr (3 days, 2/3), new.zarr (now, 3/3), and a file
    that is not a store."""
    monkeypatch.setenv("NAPARI_SAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NAPARI_SAM_CACHE_MAX_GB", raising=False)
    root = tmp_path / "cache" / "embeddings"
    image = np.random.default_rng(0).integers(0, 250, (3, 20, 24)).astype(np.uint8)
    paths = []
    for n, (name, days) in enumerate([("old", 10), ("mid", 3), ("new", 0)], start=1):
        store = EmbeddingStore.open(root / f"{name}.zarr", tiny_model, image=image)
        for _ in EmbeddingProvider.for_store(store).precompute(keys=[(i,) for i in range(n)]):
            pass
        when = time.time() - days * DAY
        for dirpath, dirnames, filenames in os.walk(store.path):
            for f in [*dirnames, *filenames]:
                os.utime(Path(dirpath) / f, (when, when))
        paths.append(Path(store.path))
    (root / "notes.txt").write_text("not a store")
    return root, paths


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["cache", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_shows_stores_most_recent_first_and_the_total(cache, capsys):
    root, (old, mid, new) = cache
    rc, out, err = _run(capsys, "list")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"cache: {root}"
    rows = [line for line in lines if line.rstrip().endswith(".zarr")]
    assert [r.split()[-1] for r in rows] == [str(new), str(mid), str(old)]
    assert "3/3" in rows[0] and "2/3" in rows[1] and "1/3" in rows[2]
    assert all(" tiny " in r and "(3, 20, 24)" in r for r in rows)
    assert time.strftime("%Y-%m-%d", time.localtime(time.time() - 10 * DAY)) in rows[2]
    assert "1 other entries" in out
    total = scan(root).total
    assert lines[-1].startswith("total ") and "in 3 stores; cap 20.0 GB" in lines[-1]
    assert f"{total / 1000:.1f} kB" in lines[-1]


def test_list_of_an_empty_cache(tmp_path, capsys):
    rc, out, _ = _run(capsys, "list", "--cache-dir", str(tmp_path / "none"))
    assert rc == 0 and "no embedding stores (directory does not exist)" in out


def test_clean_dry_run_removes_nothing(cache, capsys):
    _root, paths = cache
    rc, out, _ = _run(capsys, "clean", "--all", "--dry-run")
    assert rc == 0
    assert sum(line.startswith("would remove") for line in out.splitlines()) == 3
    assert "would free" in out.splitlines()[-1]
    assert all(p.exists() for p in paths)


def test_clean_all_touches_only_stores_of_the_default_root(cache, capsys):
    root, _paths = cache
    rc, out, _ = _run(capsys, "clean", "--all")
    assert rc == 0
    assert sum(line.startswith("removed") for line in out.splitlines()) == 3
    assert out.splitlines()[-1].startswith("freed ") and "(3 stores); cache now 0 B" in out
    assert os.listdir(root) == ["notes.txt"]


def test_clean_older_than_and_max_gb(cache, capsys):
    root, (old, mid, new) = cache
    rc, out, _ = _run(capsys, "clean", "--older-than", "5")
    assert rc == 0 and str(old) in out and (old.exists(), mid.exists()) == (False, True)
    cap_gb = scan(root).entries[-1].size / 1e9  # room for the newest store only
    rc, out, _ = _run(capsys, "clean", "--max-gb", f"{cap_gb:.9f}")
    assert rc == 0 and (mid.exists(), new.exists()) == (False, True)


def test_clean_without_options_applies_the_configured_cap(cache, capsys, monkeypatch):
    root, (old, mid, new) = cache
    rc, out, _ = _run(capsys, "clean")
    assert rc == 0 and "freed 0 B (0 stores)" in out and old.exists()  # 20 GB default
    sizes = scan(root).entries
    monkeypatch.setenv("NAPARI_SAM_CACHE_MAX_GB", str((sizes[1].size + sizes[2].size) / 1e9))
    rc, out, _ = _run(capsys, "clean")
    assert rc == 0 and (old.exists(), mid.exists(), new.exists()) == (False, True, True)


def test_clean_keeps_stores_in_use(cache, capsys):
    _root, (old, mid, new) = cache
    with hold_store(mid):
        rc, out, _ = _run(capsys, "clean", "--all")
    assert rc == 0 and "kept (in use)" in out and str(mid) in out
    assert [p.exists() for p in (old, mid, new)] == [False, True, False]


def test_removal_failure_exits_1_with_a_message(cache, capsys, monkeypatch):
    _root, paths = cache

    def refuse(self, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "rename", refuse)
    rc, _out, err = _run(capsys, "clean", "--all")
    assert rc == 1 and all(p.exists() for p in paths)
    assert err.count("could not remove") == 3 and "Permission denied" in err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--max-gb", "0"], None, "--max-gb must be > 0"),
        (["--older-than", "-1"], None, "--older-than must be ≥ 0"),
        (["--all", "--max-gb", "1"], None, "do not combine"),
        ([], "lots", "NAPARI_SAM_CACHE_MAX_GB must be a number"),
    ],
)
def test_user_errors_exit_2_with_one_line(cache, capsys, monkeypatch, argv, env, message):
    if env is not None:
        monkeypatch.setenv("NAPARI_SAM_CACHE_MAX_GB", env)
    rc, _out, err = _run(capsys, "clean", *argv)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert all(p.exists() for p in cache[1])
