"""Reading images and writing results for the command line (tif, zarr, npy, png).

Reading: format and permission errors become one line, ``cannot read X: <reason>``.
Writing: every result goes through :mod:`napari_sam.outputs` — a temporary name in the
same folder, then a rename — so a failed write leaves the previous file intact and no
temporary file; an existing result is replaced only with ``overwrite`` (``--overwrite``).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import UserError, one_line

LABEL_SUFFIXES = (".tif", ".tiff", ".npy", ".zarr")


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Errors of tifffile / zarr / numpy / the OS while reading ``path`` → UserError
    ``cannot read PATH: <reason>``."""
    try:
        yield
    except UserError:
        raise
    except PermissionError:
        raise UserError(f"cannot read {path}: permission denied") from None
    except IsADirectoryError:
        raise UserError(f"cannot read {path}: it is a folder") from None
    except OSError as err:  # includes FileNotFoundError, zarr's NodeNotFoundError
        reason = err.strerror if err.strerror and err.errno != errno.ENOENT else one_line(err)
        raise UserError(f"cannot read {path}: {reason}") from None
    except (ValueError, EOFError, KeyError) as err:  # TiffFileError, bad .npy / zarr.json
        raise UserError(f"cannot read {path}: {one_line(err)}") from None


def read_image(path: str | Path, level: int = 0) -> Any:
    """The image at ``path`` as a lazy array: nothing but metadata is read until it is
    indexed (or converted with ``np.asarray``).

    TIFF (.tif/.tiff): :class:`TiffArray`; .npy: memory-mapped; an OME-Zarr multiscales
    image (NGFF 0.4 / 0.5): its resolution ``level`` (lazy dask array;
    :func:`image_calibration` gives its physical scale); other zarr: an array, or a
    group's array ``0`` or only array. Missing files, unknown formats, zarr groups
    without one image, embedding stores and unreadable files are one
    :class:`UserError` line each."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"image not found: {p}")
    if is_ome_zarr(p):
        return check_dtype(_ome_level(p, level).data, p)
    if level:
        raise UserError(f"--level {level}: {p.name} is not an OME-Zarr image (one level only)")
    suffix = p.suffix.lower()
    with reading(p):
        if suffix in {".tif", ".tiff"}:
            return check_dtype(TiffArray(str(p)), p)
        if suffix == ".npy":
            return check_dtype(np.load(p, mmap_mode="r", allow_pickle=False), p)
        if suffix == ".zarr" or p.is_dir():
            return check_dtype(_open_zarr(p), p)
    raise UserError(f"unsupported image format {p.name!r}: use .tif, .npy or .zarr")


class TiffArray:
    """Lazy, picklable TIFF array (for Dask workers): ``shape`` / ``dtype`` / ``ndim``
    from the metadata; the file is (re)opened on the first read through tifffile's zarr
    interface, so indexing reads only the pages it needs."""

    def __init__(self, path: str) -> None:
        self.path = path
        z = self._open()
        self.shape, self.dtype = tuple(z.shape), z.dtype
        self.ndim = len(self.shape)

    def _open(self) -> Any:
        import tifffile
        import zarr

        self._z = zarr.open(tifffile.imread(self.path, aszarr=True), mode="r")
        return self._z

    def __getitem__(self, key: Any) -> Any:
        z = getattr(self, "_z", None) or self._open()
        return z[key]

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = np.asarray(self[...])
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_z"}


def is_ome_zarr(path: Path) -> bool:
    """True for an OME-Zarr multiscales image (zarr v3 ``ome`` or v2 ``multiscales``)."""
    import json

    for name in ("zarr.json", ".zattrs"):
        f = path / name
        if path.is_dir() and f.is_file():
            try:
                attrs = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return False
            attrs = attrs.get("attributes", attrs)
            return "multiscales" in attrs.get("ome", attrs)
    return False


def _ome_level(path: Path, level: int):
    from ..export.ome_zarr import read_ome_zarr

    if level < 0:
        raise UserError(f"--level {level}: levels count from 0")
    with reading(path):  # a level it does not have: one line naming the levels
        return read_ome_zarr(path, level)


def image_calibration(path: str | Path, level: int = 0) -> Any:
    """The physical calibration (:class:`~napari_sam.export.Calibration`) of an OME-Zarr
    image's ``level`` without its channel axis, else None (other formats, or no
    calibration that labels could carry)."""
    p = Path(path)
    if not is_ome_zarr(p):
        return None
    img = _ome_level(p, level)
    try:
        cal = img.calibration()
    except ValueError:
        return None
    space = [i for i, t in enumerate(img.types) if t != "channel"]
    if len(space) == len(img.axes):
        return cal
    from ..export import Calibration

    return Calibration(*(tuple(getattr(cal, f)[i] for i in space)
                         for f in ("axes", "scale", "translate", "units")))


def _open_zarr(path: Path) -> Any:
    """A zarr array, or the image array of a zarr group (``0`` or its only array)."""
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node
    if "napari_sam" in node.attrs:
        raise UserError(f"{path} is an embedding store, not an image")
    names = sorted(node.array_keys())
    if "0" in names:
        return node["0"]
    if len(names) == 1:
        return node[names[0]]
    listed = ", ".join(names) or "none"
    raise UserError(f"{path} is a zarr group with arrays {listed}: give IMAGE as {path}/NAME")


def check_dtype(image: Any, path: str | Path) -> Any:
    """Only boolean, integer and float images can be segmented."""
    kind = np.dtype(image.dtype).kind
    if kind not in "biuf":
        raise UserError(f"{path}: unsupported pixel type {image.dtype}; need integers or floats")
    return image


def check_output(
    path: str | Path, overwrite: bool, suffixes: Sequence[str] = LABEL_SUFFIXES
) -> Path:
    """Before the work: a supported suffix, not an existing file unless ``overwrite``,
    a parent folder that can be created."""
    from ..outputs import check_target

    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes and not is_ome_target(p):
        shown = [x for x in suffixes if x != ".tiff"]  # .tiff: accepted, not advertised
        names = ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else shown[0]
        raise UserError(f"--out {p.name}: use {names}")
    with writing(p):
        check_target(p, overwrite=overwrite)
    return p


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Output errors → UserError: an existing result names the two ways out."""
    from ..outputs import OutputExistsError, OutputWriteError

    try:
        yield
    except OutputExistsError as err:
        raise UserError(f"{err.path} exists; use --overwrite or another --out") from None
    except OutputWriteError as err:
        raise UserError(str(err)) from None


def is_ome_target(path: Path) -> bool:
    """``*.ome.zarr`` or ``IMAGE.ome.zarr/labels/NAME`` (labels of an OME-Zarr image)."""
    from ..export.ome_zarr import enclosing_image

    return path.name.lower().endswith(".ome.zarr") or enclosing_image(path) is not None


def write_labels(
    path: Path, labels: np.ndarray, overwrite: bool = False, calibration: Any = None
) -> None:
    """Labels as a compressed TIFF, .npy or a zarr array (by suffix), atomically;
    ``*.ome.zarr`` or ``IMAGE.ome.zarr/labels/NAME``: OME-Zarr labels (NGFF 0.5) with
    ``calibration`` (e.g. :func:`image_calibration` of the input: its physical scale);
    a ``.tif`` with a calibration: an OME-TIFF carrying it (plus its sidecar JSON, as
    ``napari-sam export`` writes), so Fiji and napari open it calibrated.

    zarr: one chunk per 2D slice, written to a temporary folder that then takes the
    name (an existing store is deleted only after that succeeded)."""
    from ..outputs import atomic_dir, atomic_file

    suffix = path.suffix.lower()
    calibrated = calibration is not None and calibration.ndim == labels.ndim
    if is_ome_target(path) or (suffix in (".tif", ".tiff") and calibrated):
        from ..export import ExportError, export_labels

        cal = calibration if calibrated else None
        try:
            export_labels(path, labels, cal, name=path.name.split(".")[0],
                          overwrite=overwrite, table=False)
        except ExportError as err:
            raise UserError(str(err)) from None
        return
    with writing(path):
        if suffix == ".zarr":
            import zarr

            with atomic_dir(path, overwrite=overwrite) as tmp:
                chunks = (1,) * (labels.ndim - 2) + labels.shape[-2:]
                arr = zarr.create_array(
                    store=str(tmp), shape=labels.shape, chunks=chunks, dtype=labels.dtype
                )
                arr[...] = labels
        elif suffix == ".npy":
            with atomic_file(path, overwrite=overwrite) as tmp:
                np.save(tmp, labels)
        else:
            import tifffile

            with atomic_file(path, overwrite=overwrite) as tmp:
                tifffile.imwrite(tmp, labels, compression="zlib")


def write_overlay(path: Path, image: np.ndarray, labels: np.ndarray, overwrite: bool = False):
    """PNG: the (normalised) 2D image in gray with translucent label colours and
    outlines, atomically."""
    from PIL import Image
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    from ..engine.image import to_uint8_rgb
    from ..outputs import atomic_file

    rgb = to_uint8_rgb(image)
    over = label2rgb(labels, image=rgb, alpha=0.35, bg_label=0, image_alpha=1.0)
    over[find_boundaries(labels, mode="inner")] = (1.0, 1.0, 0.0)
    png = Image.fromarray((over * 255).astype(np.uint8))
    with writing(path), atomic_file(path, overwrite=overwrite) as tmp:
        png.save(tmp, format="PNG")
