"""``napari-sam info``: what an embedding store holds."""

from __future__ import annotations

import argparse

HELP = "describe an embedding store (model, image shape, slices complete)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="STORE.zarr made by `napari-sam embed`")


def run(args: argparse.Namespace) -> int:
    from ..engine.loader import short_hash
    from ..store import store_info
    from .common import user_errors
    from .io import reading

    with reading(args.store), user_errors(FileNotFoundError):  # not a store / unreadable
        info = store_info(args.store)
    norm = info["normalization"]
    limits = norm["contrast_limits"]
    rows = [
        ("store", args.store),
        ("source", info["source"] or "-"),
        ("model", f"{info['model']} (weights {short_hash(info['weights_hash'])})"),
        ("precision", info["precision"]),
        ("made with", _plan(info["plan"])),
        ("image shape", _shape(info["image_shape"])),
        ("slice axes", f"{_shape(info['slice_axes'])} → {_shape(info['slice_shape'])} slices"),
        ("slice size", _shape(info["slice_size"]) + (" RGB" if info["rgb"] else "")),
        (
            "channel",
            "-" if info["channel"] is None else "axis {}, index {}".format(*info["channel"]),
        ),
        (
            "normalisation",
            f"contrast limits {limits}" if limits else f"percentiles {norm['percentiles']}",
        ),
        ("embeddings", f"{_shape(info['embedding_shape'])} {info['storage_dtype']}"),
        ("complete", _complete(info)),
        ("schema", str(info["schema_version"])),
    ]
    for key, value in rows:
        print(f"{key + ':':15s}{value}")
    return 0


def _plan(plan: dict | None) -> str:
    """The creating model's decode plan in one line (stores before it was recorded: -)."""
    if not plan:
        return "-"
    where = f"CPU class {plan['cpu_class']}" if plan.get("cpu_class") else "GPU"
    return (
        f"{where}, precision {plan['requested']} → {plan['precision']}, "
        f"attention {plan['attention']}"
    )


def _shape(t: tuple) -> str:
    return "(" + ", ".join(str(v) for v in t) + ")" if t else "()"


def _complete(info: dict) -> str:
    """Slices complete, or for a tiled store tiles complete (and the grid)."""
    tiles = info.get("tiles")
    if not tiles:
        return f"{info['slices_complete']}/{info['slices_total']} slices" + _damaged(info)
    n = info["tiles_total"] // max(info["slices_total"], 1)
    return (
        f"{info['tiles_complete']}/{info['tiles_total']} tiles ({n} per slice: "
        f"{tiles['tile'][0]} × {tiles['tile'][1]} px + halo {tiles['halo'][0]} px)"
        + _damaged(info).replace("slices", "tiles")
    )


def _damaged(info: dict) -> str:
    n = info.get("slices_damaged", 0)
    return f" ({n} damaged: recomputed by `napari-sam embed` on the same --out)" if n else ""
