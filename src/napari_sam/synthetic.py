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

__all__ = [
    "VARIANTS",
    "make_dataset",
    "nuclei_2d",
    "nuclei_2d_varied",
    "nuclei_3d",
    "nuclei_large",
]


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


def nuclei_large(
    shape: tuple[int, int] = (2048, 2048),
    diameter_range: tuple[float, float] = (8.0, 40.0),
    seed: int = 0,
    dtype: str | np.dtype = "uint16",
    *,
    out: tuple[object, object] | None = None,
    **kwargs: object,
) -> tuple[np.ndarray, np.ndarray] | tuple[object, object]:
    """A large 2D plane of nuclei (H, W) of ``dtype`` and its instance labels (H, W)
    int32, rendered block by block (:mod:`napari_sam.synthetic_large`), so planes of
    any size (e.g. 20000² into zarr) never need a whole-plane array.

    diameter_range: (min, max) of each nucleus' equivalent-circle diameter in pixels
    (uniform); elongation (major / minor axis) uniform in [1, ``elongation``].
    out: (image, labels) array-likes of the plane's shape (e.g. zarr arrays) to write
    into block by block (returned); None: numpy arrays. kwargs: ``cover`` (target
    fraction of the area covered, default 0.3), ``elongation`` (1.4), ``max_overlap``
    (0.1), ``blur`` (1.0), ``photons`` (60), ``read_noise`` (2), as :func:`nuclei_2d`;
    ``fixed``: round nuclei (row, col, diameter) placed first (e.g. on tile borders).
    Seeded and deterministic; a region can be rendered alone with
    ``LargeNuclei(...).region(r0, c0, r1, c1)``.
    """
    from .synthetic_large import LargeNuclei

    scene = LargeNuclei(shape, diameter_range, seed, dtype, **kwargs)  # type: ignore[arg-type]
    if out is None:
        return scene.region(0, 0, *scene.shape)
    for _ in scene.write(*out):
        pass
    return out


# Named settings of :func:`nuclei_2d_varied` (benchmarks/amg_junk.py, tests): images
# unlike the demo model's training data in one respect each.
VARIANTS: dict[str, dict] = {
    "soft": {"edge": 3.0, "blur": 1.5},  # wide soft edge falloff
    "soft-large": {"radius": (18.0, 30.0), "edge": 4.0, "blur": 1.5},  # few, large, soft
    "sharp": {"edge": 0.0, "blur": 0.4},  # hard edges, almost no optical blur
    "elliptical": {"elongation": (1.6, 2.6)},  # long ellipses
    "touching": {"touching": 0.8},  # most nuclei placed in contact with another
    "gradient": {"gradient": 0.8},  # strong uneven background
    "uint16-poisson": {"dtype": "uint16", "photons": 8.0, "read_noise": 0.0},  # shot noise
}


def nuclei_2d_varied(
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
    *,
    n_nuclei: int | None = None,
    radius: tuple[float, float] = (8.0, 20.0),
    elongation: tuple[float, float] = (1.0, 1.4),
    edge: float = 1.0,
    touching: float = 0.0,
    gradient: float = 0.0,
    max_overlap: float = 0.1,
    dtype: str | np.dtype = "uint8",
    blur: float = 1.0,
    photons: float = 60.0,
    read_noise: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei with controllable appearance (a generator the demo model never saw in
    training): image (H, W) of ``dtype`` and instance labels (H, W) int32.

    radius: (min, max) of sqrt(major × minor semi-axis) in pixels; elongation: (min,
    max) ratio major / minor axis; edge: width in pixels of a logistic intensity falloff
    centred on the labelled boundary (0 = hard edge; the label is where the falloff is
    at half height); touching: probability that a nucleus is placed in contact with one
    already placed (along the line through both centres); gradient: an extra linear
    background across the image in a random direction, from 0 to ``gradient`` × the
    median nucleus signal; max_overlap, dtype, blur, photons, read_noise: as
    :func:`nuclei_2d` (Poisson shot noise at ``photons`` per unit brightness, Gaussian
    read noise). Seeded and deterministic. See :data:`VARIANTS`.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"dtype must be uint8 or uint16, got {dtype}")
    if radius[0] <= 0 or radius[1] < radius[0]:
        raise ValueError(f"radius must be (min, max) with 0 < min <= max, got {radius}")
    if elongation[0] < 1 or elongation[1] < elongation[0]:
        raise ValueError(f"elongation must be (min, max) with 1 <= min <= max, got {elongation}")
    if edge < 0 or not 0 <= touching <= 1 or gradient < 0:
        raise ValueError("edge and gradient must be ≥ 0 and touching in [0, 1]")
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    if n_nuclei is None:
        cover = shape[0] * shape[1] / (np.pi * float(np.mean(radius)) ** 2)
        n_nuclei = max(int(rng.uniform(0.3, 0.55) * cover), 1)
    signal = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    placed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (centre, axes, rot)
    for _ in range(n_nuclei * 6):
        if len(placed) >= n_nuclei:
            break
        r, e = rng.uniform(*radius), rng.uniform(*elongation)
        axes = np.array([r * np.sqrt(e), r / np.sqrt(e)])
        rot = _random_rotation(rng, 2)
        centre = rng.uniform(0, 1, 2) * np.array(shape)
        if placed and rng.random() < touching:
            c0, a0, r0 = placed[rng.integers(len(placed))]
            u = _unit(rng.uniform(0, 2 * np.pi))
            centre = c0 + u * (_reach(a0, r0, u) + _reach(axes, rot, u))
        grow = 1.0 + (3.0 * edge + 1.0) / axes.min()  # crop wide enough for the falloff
        sl, dist = _ellipse_distance(centre, axes * grow, rot, shape, (1.0, 1.0))
        if dist is None:
            continue
        dist = dist * grow
        inside = dist <= 1.0
        if inside.sum() < 12:
            continue
        under = labels[sl][inside]
        if (under > 0).mean() > max_overlap:
            continue
        ids, counts = np.unique(under[under > 0], return_counts=True)
        if np.any(counts > max_overlap * np.bincount(labels.ravel())[ids]):
            continue
        value = _nucleus_intensity(rng, dist, dist <= grow)
        if edge > 0:  # logistic falloff in pixels across the boundary (dist = 1)
            value *= 1.0 / (1.0 + np.exp((dist - 1.0) * axes.min() * 4.0 / edge))
        else:
            value *= inside
        signal[sl] += value
        labels[sl][inside] = len(placed) + 1
        placed.append((centre, axes, rot))
    if gradient > 0:
        u = _unit(rng.uniform(0, 2 * np.pi))
        rows, cols = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
        ramp = rows * u[0] + cols * u[1]
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-9)
        level = float(np.median(signal[labels > 0])) if placed else 1.0
        signal += (gradient * level * ramp).astype(np.float32)
    return _acquire(rng, signal, (1.0, 1.0), (blur, blur), photons, read_noise, dtype), labels


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def _reach(axes: np.ndarray, rot: np.ndarray, u: np.ndarray) -> float:
    """Distance from an ellipse's centre to its boundary along the unit vector ``u``."""
    v = u @ rot  # direction in the ellipse frame (as in _ellipse_distance)
    return float(1.0 / np.sqrt(np.sum((v / axes) ** 2)))


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
