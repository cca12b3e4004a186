"""Reading images and writing results for the command line (tif, zarr, npy, png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import UserError


def read_image(path: str | Path) -> np.ndarray:
    """TIFF (.tif/.tiff), .npy or a zarr array (.zarr) → array (zarr stays lazy)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"input not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix in {".tif", ".tiff"}:
            import tifffile

            return tifffile.imread(p)
        if suffix == ".npy":
            return np.load(p, mmap_mode="r", allow_pickle=False)
        if suffix == ".zarr" or p.is_dir():
            import zarr

            node = zarr.open(str(p), mode="r")
            if not hasattr(node, "shape"):
                raise UserError(f"{p} is a zarr group, not an array; give the array's path")
            return node
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"cannot read {p}: {err}") from None
    raise UserError(f"unsupported input {p.name}: use .tif, .tiff, .npy or .zarr")


def write_labels(path: Path, labels: np.ndarray) -> None:
    """Labels as a compressed TIFF (or .npy by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        np.save(path, labels)
    else:
        import tifffile

        tifffile.imwrite(path, labels, compression="zlib")


def write_overlay(path: Path, image: np.ndarray, labels: np.ndarray) -> None:
    """PNG: the (normalised) 2D image in gray with translucent label colours and
    outlines."""
    from PIL import Image
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    from ..engine.image import to_uint8_rgb

    rgb = to_uint8_rgb(image)
    over = label2rgb(labels, image=rgb, alpha=0.35, bg_label=0, image_alpha=1.0)
    over[find_boundaries(labels, mode="inner")] = (1.0, 1.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((over * 255).astype(np.uint8)).save(path)
