"""``napari-sam cache``: list the default embedding stores, or clean them up.

Only the default store root ``<cache>/embeddings`` is ever looked at (``--cache-dir``
or ``$NAPARI_SAM_CACHE_DIR`` choose ``<cache>``); only napari-sam embedding stores not
in use are removed (``napari_sam.store.cache_dir``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from . import UserError

HELP = "list the default embedding stores, or clean them up (size cap, age, all)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser(
        "list", help="stores: size, last use, model, image, slices complete; total vs cap"
    )
    cl = sub.add_parser(
        "clean",
        help="remove least-recently-used stores down to the cap (default), old ones, or all",
        description="Remove stores from the default cache. Without options: least recently "
        "used first, down to the cap ($NAPARI_SAM_CACHE_MAX_GB, default 20 GB). Stores held "
        "in use by a napari-sam process are never removed.",
    )
    cl.add_argument("--max-gb", type=float, metavar="X", help="shrink to at most X GB (LRU)")
    cl.add_argument(
        "--older-than", type=float, metavar="DAYS", help="remove stores unused for DAYS days"
    )
    cl.add_argument("--all", action="store_true", help="remove every store (asks nothing)")
    cl.add_argument("--dry-run", action="store_true", help="show what would be removed")
    for q in (ls, cl):
        q.add_argument("--cache-dir", help="cache directory (default: $NAPARI_SAM_CACHE_DIR)")


def run(args: argparse.Namespace) -> int:
    from ..store.paths import default_store_root

    root = default_store_root(args.cache_dir)
    return _list(root) if args.action == "list" else _clean(root, args)


def _list(root: Any) -> int:
    from ..store.cache_dir import cache_cap_bytes, scan
    from ..store.files import store_info

    listing = scan(root)
    cap = _configured_cap(cache_cap_bytes)
    print(f"cache: {root}")
    if not listing.entries:
        print("no embedding stores" + ("" if root.is_dir() else " (directory does not exist)"))
    else:
        head = f"{'SIZE':>9s}  {'LAST USED':16s}  {'MODEL':12s}  {'IMAGE':20s}  {'SLICES':>11s}"
        print(head + "  PATH")
    for e in reversed(listing.entries):  # most recently used first
        try:
            info = store_info(e.path)
            slices = f"{info['slices_complete']}/{info['slices_total']}"
            if info.get("tiles"):
                slices = f"{info['tiles_complete']}/{info['tiles_total']} t"
        except Exception:  # damaged store: still listed, with what its attrs say
            slices = "?"
        model = e.attrs.get("model", {}).get("name", "?")
        shape = _shape(e.attrs.get("image", {}).get("shape", ()))
        flag = "  (in use)" if e.in_use else ""
        print(
            f"{_size(e.size):>9s}  {_when(e.last_used):16s}  {model:12.12s}  {shape:20s}  "
            f"{slices:>11s}  {e.path}{flag}"
        )
    if listing.foreign:
        print(f"{len(listing.foreign)} other entries in {root} (not stores, never touched)")
    print(f"total {_size(listing.total)} in {len(listing.entries)} stores; cap {_cap(cap)}")
    return 0


def _clean(root: Any, args: argparse.Namespace) -> int:
    from ..store.cache_dir import cache_cap_bytes, clean

    if args.max_gb is not None and not args.max_gb > 0:
        raise UserError(f"--max-gb must be > 0, got {args.max_gb:g} (use --all to remove all)")
    if args.older_than is not None and not args.older_than >= 0:
        raise UserError(f"--older-than must be ≥ 0 days, got {args.older_than:g}")
    if args.all and (args.max_gb is not None or args.older_than is not None):
        raise UserError("--all removes every store: do not combine it with --max-gb/--older-than")
    cap = _configured_cap(cache_cap_bytes)
    max_bytes = None if args.max_gb is None else int(args.max_gb * 1e9)
    if not args.all and args.older_than is None and max_bytes is None:
        max_bytes = cap
        if cap is None:
            print("no size cap is set (NAPARI_SAM_CACHE_MAX_GB=0): only leftovers are removed")
    result = clean(
        root,
        max_bytes=max_bytes,
        older_than_days=args.older_than,
        everything=args.all,
        dry_run=args.dry_run,
    )
    verb = "would remove" if args.dry_run else "removed"
    for e in result.removed:
        print(f"{verb} {_size(e.size):>9s}  last used {_when(e.last_used)}  {e.path}")
    for e in result.kept:
        print(f"kept (in use)     {_size(e.size):>9s}  {e.path}")
    for e, why in result.failed:
        print(f"napari-sam cache: could not remove {e.path}: {why}", file=sys.stderr)
    n = len(result.removed)
    print(
        f"{'would free' if args.dry_run else 'freed'} {_size(result.freed)} "
        f"({n} store{'s' * (n != 1)}); cache {'would be' if args.dry_run else 'now'} "
        f"{_size(result.total_after)}, cap {_cap(cap)}"
    )
    return 1 if result.failed else 0


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _cap(cap: int | None) -> str:
    return "none (NAPARI_SAM_CACHE_MAX_GB=0)" if cap is None else _size(cap)


def _shape(t: Any) -> str:
    return "(" + ", ".join(str(v) for v in t) + ")"


def _configured_cap(cache_cap_bytes: Callable[[], int | None]) -> int | None:
    """The configured cap; a malformed NAPARI_SAM_CACHE_MAX_GB is the user's to fix."""
    try:
        return cache_cap_bytes()
    except ValueError as err:
        raise UserError(str(err)) from None
