"""``napari-sam export``: write a label image as OME-Zarr (NGFF 0.5) or calibrated
OME-TIFF, with its object table (docs/export.md).

    napari-sam export labels.tif --out labels.ome.zarr --scale 2 0.5 0.5 \\
        --translate 10 100 -50 --units micrometer
    napari-sam export labels.tif --out image.ome.zarr/labels/nuclei   # into an image

LABELS: .tif, .npy or a zarr array (read lazily: written chunk by chunk). Without
--scale / --translate, the calibration of an OME-Zarr image target is used, else unit
voxels at the origin.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import UserError

HELP = "export labels to OME-Zarr / calibrated OME-TIFF with an object table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("labels", help="label image (.tif, .npy, .zarr array)")
    p.add_argument("--out", required=True, help=".ome.zarr / .zarr / .tif / IMAGE/labels/NAME")
    p.add_argument("--scale", type=float, nargs="+", help="voxel size per axis")
    p.add_argument("--translate", type=float, nargs="+", help="position of voxel 0 per axis")
    p.add_argument("--units", nargs="+", help="unit per axis, or one for the spatial axes")
    p.add_argument("--axes", help="axis names, e.g. tzyx (default by number of axes)")
    p.add_argument("--provenance", help="provenance JSON to store with the export")
    p.add_argument("--levels", type=int, help="OME-Zarr pyramid levels (default: auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--no-table", action="store_true", help="no object table CSV")


def run(args: argparse.Namespace) -> int:
    from ..export import Calibration, ExportError, Provenance, export_labels
    from ..export.ome_zarr import enclosing_image, read_ome_zarr
    from .io import read_image

    labels = read_image(args.labels)
    nd = labels.ndim
    out = Path(args.out)
    for flag in ("scale", "translate"):
        v = getattr(args, flag)
        if v is not None and len(v) != nd:
            raise UserError(f"--{flag} needs {nd} values (one per axis), got {len(v)}")
    units = args.units
    try:
        cal = Calibration.default(nd)
        if args.scale is None and args.translate is None and enclosing_image(out):
            img = read_ome_zarr(enclosing_image(out)).calibration()
            space = [i for i, t in enumerate(img.types) if t != "channel"]
            cal = Calibration(
                *(tuple(getattr(img, f)[i] for i in space)[-nd:]
                  for f in ("axes", "scale", "translate", "units"))
            )
        if units is not None and len(units) == 1:
            units = [units[0] if a in cal.space_axes else None for a in range(nd)]
        cal = Calibration.create(
            nd,
            args.scale or cal.scale,
            args.translate or cal.translate,
            units if units is not None else cal.units,
            tuple(args.axes) if args.axes else cal.axes,
        )
        prov = Provenance.load(args.provenance) if args.provenance else None
        written = export_labels(
            out, labels, cal, name=out.name.split(".")[0], provenance=prov,
            overwrite=args.overwrite, table=not args.no_table, levels=args.levels,
        )
    except ExportError as err:
        raise UserError(str(err)) from None
    print("written: " + ", ".join(map(str, written)))
    return 0
