"""Synthetic fluorescence-like nuclei with instance ground truth (2D and 3D).

Used to train and evaluate the packaged demo model, by the tests and for sample data.
Everything is seeded and deterministic: the same arguments give the same arrays.

The image model, per nucleus: an ellipse (2D) or ellipsoid (3D, physical units with an
anisotropic z step) of random size, elongation and orientation; a brightness drawn per
nucleus; a smooth multiplicative texture plus a few bright spots (nucleoli / chromocentres);
a soft edge falloff. Nuclei may touch and overlap a little (at most ``max_overlap`` of
either area); where they overlap the fluorescence adds up and the label goes to the nucleus
placed last. The scene gets a linear background gradient, an optical blur (larger along z),
Poisson shot noise and Gaussian read noise, and is returned as uint8 or uint16.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["make_dataset", "nuclei_2d", "nuclei_3d"]


def nuclei_2d(
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
    n_nuclei: int | None = None,
    radius: tuple[float, float] = (8.0, 22.0),
    max_overlap: float = 0.2,
    dtype: str | np.dtype = "uint8",
    blur: float = 1.0,
    photons: float = 60.0,
    read_noise: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A 2D image (H, W) of ``dtype`` and its instance labels (H, W) int32 (0 = background).

    n_nuclei: how many nuclei to try to place (None: chosen from the area and ``radius``);
    radius: (min, max) mean semi-axis in pixels; photons: expected photon count of a
    nucleus of brightness 1 (lower = noisier); blur: Gaussian sigma of the optics in pixels.
    """
    return _render(
        tuple(shape),
        (1.0, 1.0),
        seed,
        n_nuclei,
        radius,
        max_overlap,
        dtype,
        (blur, blur),
        photons,
        read_noise,
    )


def nuclei_3d(
    shape: tuple[int, int, int] = (24, 128, 128),
    seed: int = 0,
    z_step: float = 2.5,
    n_nuclei: int | None = None,
    radius: tuple[float, float] = (7.0, 16.0),
    max_overlap: float = 0.2,
    dtype: str | np.dtype = "uint16",
    blur: tuple[float, float] = (1.6, 1.0),
    photons: float = 60.0,
    read_noise: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A 3D volume (Z, Y, X) of ``dtype`` and its instance labels (Z, Y, X) int32.

    z_step: z voxel size in units of the xy pixel size (anisotropy); radius in xy pixels
    (physical units); blur: (z, xy) Gaussian sigma in physical (xy-pixel) units.
    """
    return _render(
        tuple(shape),
        (float(z_step), 1.0, 1.0),
        seed,
        n_nuclei,
        radius,
        max_overlap,
        dtype,
        (blur[0],) + (blur[1],) * 2,
        photons,
        read_noise,
    )


def make_dataset(
    n: int, seed: int = 0, shape: tuple[int, ...] = (256, 256), **kwargs: object
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image, labels) pairs; image ``i`` uses an independent seed derived from
    (``seed``, ``i``). 2D for a 2-tuple ``shape``, 3D for a 3-tuple. ``kwargs`` go to
    :func:`nuclei_2d` / :func:`nuclei_3d`."""
    children = np.random.SeedSequence(seed).spawn(n)
    make = nuclei_2d if len(shape) == 2 else nuclei_3d
    return [
        make(shape, seed=int(c.generate_state(1)[0]), **kwargs)  # type: ignore[arg-type]
        for c in children
    ]


# ------------------------------------------------------------------------ internals
def _render(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    seed: int,
    n_nuclei: int | None,
    radius: tuple[float, float],
    max_overlap: float,
    dtype: str | np.dtype,
    blur: tuple[float, ...],
    photons: float,
    read_noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"dtype must be uint8 or uint16, got {dtype}")
    if radius[0] <= 0 or radius[1] < radius[0]:
        raise ValueError(f"radius must be (min, max) with 0 < min <= max, got {radius}")
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    extent = np.array(shape, float) * np.array(spacing)
    if n_nuclei is None:
        mean_r = float(np.mean(radius))
        cover = np.prod(extent[-2:]) / (np.pi * mean_r**2)
        n_nuclei = int(rng.uniform(0.25, 0.6) * cover * (1.0 if ndim == 2 else 0.8))
        n_nuclei = max(n_nuclei, 1)
    signal = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    next_label = 1
    for _ in range(n_nuclei * 4):
        if next_label > n_nuclei:
            break
        r = rng.uniform(*radius)
        axes = r * rng.uniform(0.7, 1.3, ndim)
        if ndim == 3:
            axes[0] = r * rng.uniform(0.8, 1.2)
        centre = rng.uniform(0, 1, ndim) * extent
        rot = _random_rotation(rng, ndim)
        sl, dist = _ellipse_distance(centre, axes, rot, shape, spacing)
        if dist is None:
            continue
        inside = dist <= 1.0
        area = int(inside.sum())
        if area < 12:
            continue
        under = labels[sl][inside]
        if under.any():
            # reject if the new nucleus would cover too much of itself or of any neighbour
            if (under > 0).mean() > max_overlap:
                continue
            ids, counts = np.unique(under[under > 0], return_counts=True)
            full = np.array([np.count_nonzero(labels == i) for i in ids])
            if np.any(counts > max_overlap * full):
                continue
        signal[sl] += _nucleus_intensity(rng, dist, inside)
        labels[sl][inside] = next_label
        next_label += 1
    return _acquire(rng, signal, spacing, blur, photons, read_noise, dtype), labels


def _random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    if ndim == 2:
        a = rng.uniform(0, np.pi)
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _ellipse_distance(
    centre: np.ndarray,
    axes: np.ndarray,
    rot: np.ndarray,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
) -> tuple[tuple[slice, ...], np.ndarray | None]:
    """Normalised ellipse 'radius' (≤ 1 inside) on the bounding crop of the nucleus."""
    sp = np.array(spacing)
    reach = axes.max() + 2.0
    lo = np.maximum(np.floor((centre - reach) / sp), 0).astype(int)
    hi = np.minimum(np.ceil((centre + reach) / sp) + 1, shape).astype(int)
    if np.any(hi <= lo):
        return (), None
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    grids = np.meshgrid(
        *[np.arange(a, b) * s - c for a, b, s, c in zip(lo, hi, sp, centre, strict=True)],
        indexing="ij",
    )
    pts = np.stack(grids, -1) @ rot  # coordinates in the ellipse frame
    dist = np.sqrt(np.sum((pts / axes) ** 2, axis=-1))
    return sl, dist


def _nucleus_intensity(rng: np.random.Generator, dist: np.ndarray, inside: np.ndarray):
    brightness = rng.uniform(0.3, 1.0)
    texture = ndi.gaussian_filter(rng.normal(size=dist.shape), rng.uniform(1.0, 3.0))
    texture = 1.0 + rng.uniform(0.1, 0.45) * texture / (texture.std() + 1e-6)
    spots = np.zeros(dist.shape)
    for _ in range(rng.integers(0, 4)):
        idx = tuple(rng.integers(0, s) for s in dist.shape)
        if inside[idx]:
            spots[idx] = rng.uniform(20, 60)
    spots = ndi.gaussian_filter(spots, 1.2)
    profile = 1.0 - rng.uniform(0.0, 0.4) * np.clip(dist, 0, 1) ** 2
    value = brightness * np.clip(texture + spots, 0.2, None) * profile
    return np.where(inside, value, 0.0).astype(np.float32)


def _acquire(
    rng: np.random.Generator,
    signal: np.ndarray,
    spacing: tuple[float, ...],
    blur: tuple[float, ...],
    photons: float,
    read_noise: float,
    dtype: np.dtype,
) -> np.ndarray:
    ndim = signal.ndim
    coords = np.meshgrid(*[np.linspace(-1, 1, s) for s in signal.shape], indexing="ij")
    slope = rng.uniform(-1, 1, ndim) * rng.uniform(0.0, 0.12)
    background = rng.uniform(0.03, 0.12) + sum(c * g for c, g in zip(coords, slope, strict=True))
    sigma = [b / s for b, s in zip(blur, spacing, strict=True)]
    clean = ndi.gaussian_filter(signal, sigma) + np.clip(background, 0.0, None)
    counts = rng.poisson(clean * photons).astype(np.float32)
    counts += rng.normal(0.0, read_noise, signal.shape).astype(np.float32)
    gain = rng.uniform(1.5, 3.5) if dtype == np.uint8 else rng.uniform(8.0, 40.0)
    offset = rng.uniform(0, 10) if dtype == np.uint8 else rng.uniform(90, 500)
    out = counts * gain + offset
    return np.clip(np.rint(out), 0, np.iinfo(dtype).max).astype(dtype)
