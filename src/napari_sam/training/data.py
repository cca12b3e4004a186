"""Training pairs: (image, instance labels) → model-ready samples.

A sample goes through the same normalisation and resize as inference
(:func:`napari_sam.engine.image.to_uint8_rgb`, :func:`napari_sam.engine.transforms.resize_rgb`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine.image import Normalization, to_uint8_rgb
from ..engine.transforms import resize_rgb, resized_shape
from .prompts import object_pixels

IMAGE_SUFFIXES = (".tif", ".tiff", ".npy", ".png")


@dataclass
class Sample:
    """One augmented training slice.

    rgb: (h, w, 3) uint8 resized model input (before padding); labels: (H, W) int32 at the
    original size (prompts are sampled here); labels_in: (h, w) int32 resized (nearest)
    to the model input (targets); objects: label → (n, 2) (row, col) original pixels.
    """

    rgb: np.ndarray
    labels: np.ndarray
    labels_in: np.ndarray
    objects: dict[int, np.ndarray]

    @property
    def original_size(self) -> tuple[int, int]:
        return int(self.labels.shape[0]), int(self.labels.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def prepare_sample(
    image: np.ndarray,
    labels: np.ndarray,
    image_size: int,
    rng: np.random.Generator | None = None,
    normalization: Normalization | None = None,
    min_area: int = 10,
) -> Sample:
    """Random flip / 90° rotation (when ``rng`` is given), normalise, resize."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in (H, W)")
    if rng is not None:
        k = int(rng.integers(0, 4))
        image, labels = np.rot90(image, k, (0, 1)), np.rot90(labels, k)
        if rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    rgb = resize_rgb(to_uint8_rgb(np.ascontiguousarray(image), normalization), image_size)
    h, w = resized_shape(*labels.shape, image_size)
    if (h, w) == labels.shape:
        labels_in = labels
    else:
        labels_in = np.array(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST))
    return Sample(rgb, labels, labels_in, object_pixels(labels, min_area))


def random_synthetic_pairs(
    n: int, seed: int, shape: tuple[int, int] = (256, 256)
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` synthetic 2D pairs with per-image random acquisition settings (nucleus size,
    density, brightness range, noise, blur, uint8 / uint16): the demo model's training and
    evaluation distribution."""
    from ..synthetic import nuclei_2d

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        r_lo = rng.uniform(5.0, 16.0)
        out.append(
            nuclei_2d(
                shape,
                seed=int(rng.integers(0, 2**31)),
                radius=(r_lo, r_lo * rng.uniform(1.3, 2.2)),
                max_overlap=rng.uniform(0.05, 0.3),
                dtype="uint8" if rng.random() < 0.5 else "uint16",
                blur=rng.uniform(0.6, 2.0),
                photons=float(np.exp(rng.uniform(np.log(15), np.log(300)))),
                read_noise=rng.uniform(0.5, 4.0),
            )
        )
    return out


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    return np.asarray(Image.open(path))


def load_pairs(
    images_dir: str | Path, labels_dir: str | Path
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs from two folders with equally named files (.tif / .npy / .png). 3D stacks
    (Z, Y, X) become one 2D pair per z-slice that has objects."""
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    pairs = []
    for f in files:
        lab_path = labels_dir / f.name
        if not lab_path.is_file():
            raise FileNotFoundError(f"no labels file {lab_path} for image {f}")
        img, lab = _read(f), _read(lab_path)
        if not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"{lab_path}: labels must be integers, got {lab.dtype}")
        if lab.ndim == 3 and img.ndim == 3 and img.shape == lab.shape:
            pairs += [(img[z], lab[z]) for z in range(lab.shape[0]) if lab[z].any()]
        elif lab.ndim == 2 and img.shape[:2] == lab.shape:
            pairs.append((img, lab))
        else:
            raise ValueError(f"{f.name}: image {img.shape} and labels {lab.shape} do not match")
    return pairs
