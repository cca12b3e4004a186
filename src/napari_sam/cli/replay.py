"""``napari-sam replay``: re-create a label image from its provenance, headless
(docs/export.md).

    napari-sam replay labels.napari_sam.json cells.tif --out replayed.ome.zarr

PROVENANCE: a provenance JSON, a TIFF export's sidecar, or an OME-Zarr export (its
``napari_sam`` attributes). IMAGE: the image the labels were made on (.tif, .npy,
.zarr, or an OME-Zarr image, read at ``--level``). Every recorded action is re-run in
order with the recorded model, precision and normalisation; the labels are written to
OUT (.ome.zarr / .zarr / .tif / .tiff with the object table and the provenance, or
.npy), calibrated from the OME-Zarr image or the recorded calibration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import UserError

HELP = "re-create labels from their provenance (re-runs every recorded action)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("provenance", help="provenance .json, TIFF sidecar or OME-Zarr export")
    p.add_argument("image", help="the image the labels were made on (.tif, .npy, .zarr)")
    p.add_argument("--out", required=True, help="output labels (.ome.zarr, .zarr, .tif, .npy)")
    p.add_argument("--level", type=int, default=0, help="OME-Zarr image: resolution level")
    p.add_argument("--checkpoint", help="checkpoint file, when the recorded one is elsewhere")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--no-table", action="store_true", help="no object table CSV")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..export import Calibration, ExportError, Provenance
    from ..export.replay import iter_replay
    from .progress import drive

    prov_path = Path(args.provenance)
    if not prov_path.exists():
        raise UserError(f"provenance not found: {prov_path}")
    prov = Provenance.load(prov_path)
    image, cal = read_image_any(args.image, args.level)
    result = drive(
        iter_replay(prov, image, device=args.device, checkpoint=args.checkpoint),
        "replay", "action", quiet=args.no_progress,
    )
    for line in result.mismatches:
        print(f"warning: {line}", file=sys.stderr)
    if cal is None and prov.image.get("calibration"):
        cal = Calibration.from_dict(prov.image["calibration"])
    if cal is not None and cal.ndim != result.labels.ndim:
        cal = None
    try:
        written = write_output(Path(args.out), result.labels, cal, prov, args)
    except ExportError as err:
        raise UserError(str(err)) from None
    n = len({i for a in prov.actions for i in a.get("ids", [])})
    print(f"{len(prov.actions)} action(s), {n} object id(s) → {', '.join(map(str, written))}")
    return 0


def read_image_any(path: str, level: int = 0):
    """(image, Calibration or None): OME-Zarr images through the export reader (lazy,
    calibrated), anything else through the CLI reader (no calibration)."""
    from ..export.ome_zarr import read_ome_zarr
    from .io import read_image

    p = Path(path)
    if p.is_dir() and (p / "zarr.json").exists():
        import json

        attrs = json.loads((p / "zarr.json").read_text()).get("attributes", {})
        if "multiscales" in attrs.get("ome", {}):
            try:
                img = read_ome_zarr(p, level)
            except ValueError as err:
                raise UserError(str(err)) from None
            keep = [i for i, t in enumerate(img.types) if t != "channel"]
            try:
                cal = img.calibration() if len(keep) == len(img.axes) else None
            except ValueError:
                cal = None
            return img.data, cal
    if level:
        raise UserError("--level applies to OME-Zarr images only")
    return read_image(p), None


def write_output(out: Path, labels: np.ndarray, cal, prov, args) -> list[Path]:
    from ..export import export_labels
    from ..export.ome_zarr import enclosing_image

    if out.suffix.lower() == ".npy":
        if out.exists() and not args.overwrite:
            raise UserError(f"{out} exists; pass --overwrite to replace it")
        from ..export.atomic import atomic_output

        with atomic_output(out, overwrite=args.overwrite) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, labels)
        return [out]
    low = out.name.lower()
    if not low.endswith((".zarr", ".tif", ".tiff")) and enclosing_image(out) is None:
        raise UserError(f"--out {out.name}: use .ome.zarr, .zarr, .tif, .tiff or .npy")
    return export_labels(
        out, labels, cal, name=out.name.split(".")[0], provenance=prov,
        overwrite=args.overwrite, table=not args.no_table,
    )
