"""Synthetic nuclei on planes of any size, rendered block by block (see
:func:`napari_sam.synthetic.nuclei_large`).

The plane is cut into fixed blocks of :data:`BLOCK` × :data:`BLOCK` pixels. Each block
draws its own nuclei (centres inside the block) from a generator seeded by (seed, block
row, block col); a nucleus is rejected when it would overlap nuclei already placed — in
its block or in the neighbouring blocks placed before it (row-major order) — by more than
``max_overlap`` of either area, as :func:`~napari_sam.synthetic.nuclei_2d` does. Only the
geometry (a few numbers per nucleus) is kept for the whole plane; pixels are rendered
per block from the nuclei of the block and its eight neighbours, each nucleus from its
own seed, so a nucleus across a block border is one object with identical pixels on
both sides, and the optical blur of a block (computed with a margin) equals a
whole-plane blur. Shot noise and read noise are drawn per block. Peak memory is a few
blocks; any region can be rendered without the rest of the plane (:meth:`region`).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .synthetic import _ellipse_distance, _nucleus_intensity

BLOCK = 512  # pixels per block side (part of the definition: noise is drawn per block)
_GEOMETRY = 7  # centre row, centre col, semi-axis 0, semi-axis 1, angle, seed, area


class LargeNuclei:
    """The scene of :func:`~napari_sam.synthetic.nuclei_large` (see there for the
    parameters). ``geometry[(bi, bj)]`` holds the block's nuclei, (n, 7) float64:
    centre (row, col), semi-axes, rotation angle, intensity seed, area (pixels); labels are numbered
    in placement order (block row-major, then within the block)."""

    def __init__(
        self,
        shape: tuple[int, int],
        diameter_range: tuple[float, float] = (8.0, 40.0),
        seed: int = 0,
        dtype: str | np.dtype = "uint16",
        *,
        cover: float = 0.3,
        elongation: float = 1.4,
        max_overlap: float = 0.1,
        blur: float = 1.0,
        photons: float = 60.0,
        read_noise: float = 2.0,
        fixed: Sequence[tuple[float, float, float]] = (),
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"dtype must be uint8 or uint16, got {self.dtype}")
        if min(self.shape) < 1:
            raise ValueError(f"shape must be two sizes ≥ 1, got {shape}")
        d0, d1 = (float(v) for v in diameter_range)
        if d0 < 2 or d1 < d0 or d1 > BLOCK / 4:
            raise ValueError(
                f"diameter_range must be (min, max) with 2 ≤ min ≤ max ≤ {BLOCK // 4}, "
                f"got {diameter_range}"
            )
        if not 0 < cover < 1 or elongation < 1 or not 0 <= max_overlap <= 1:
            raise ValueError("need 0 < cover < 1, elongation ≥ 1 and 0 ≤ max_overlap ≤ 1")
        self.diameter_range, self.seed = (d0, d1), int(seed)
        self.cover, self.elongation, self.max_overlap = cover, elongation, max_overlap
        self.blur, self.photons, self.read_noise = blur, photons, read_noise
        self.fixed = np.asarray(fixed, dtype=np.float64).reshape(-1, 3)
        if len(self.fixed) and (self.fixed[:, 2] < 2).any():
            raise ValueError("fixed nuclei are (row, col, diameter) with diameter ≥ 2")
        # reach of a nucleus' crop beyond its centre (as _ellipse_distance computes it)
        self.reach = math.ceil(d1 / 2 * math.sqrt(elongation)) + 3
        self.blocks = (-(-self.shape[0] // BLOCK), -(-self.shape[1] // BLOCK))
        rng = np.random.default_rng([self.seed, 0x5CA1E])
        self.slope = rng.uniform(-1, 1, 2) * rng.uniform(0.0, 0.12)
        self.level = rng.uniform(0.03, 0.12)
        up = self.dtype == np.uint16
        self.gain = rng.uniform(8.0, 40.0) if up else rng.uniform(1.5, 3.5)
        self.offset = rng.uniform(90, 500) if up else rng.uniform(0, 10)
        self.geometry: dict[tuple[int, int], np.ndarray] = {}
        self.first_label: dict[tuple[int, int], int] = {}
        self._place_all()

    @property
    def n_nuclei(self) -> int:
        return sum(len(g) for g in self.geometry.values())

    # ----------------------------------------------------------------- geometry
    def _place_all(self) -> None:
        n = 0
        for bi in range(self.blocks[0]):
            for bj in range(self.blocks[1]):
                self.first_label[(bi, bj)] = n + 1
                self.geometry[(bi, bj)] = self._place_block(bi, bj)
                n += len(self.geometry[(bi, bj)])

    def _block_region(self, bi: int, bj: int, margin: int) -> tuple[int, int, int, int]:
        h, w = self.shape
        r0, c0 = bi * BLOCK, bj * BLOCK
        return (
            max(r0 - margin, 0),
            max(c0 - margin, 0),
            min(r0 + BLOCK + margin, h),
            min(c0 + BLOCK + margin, w),
        )

    def _place_block(self, bi: int, bj: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, bi, bj])
        region = self._block_region(bi, bj, 2 * self.reach)
        r0, c0, r1, c1 = region
        occupied = np.zeros((r1 - r0, c1 - c0), np.int32)  # index + 1 into ``areas``
        areas: list[int] = []
        for nuc in self._earlier_neighbours(bi, bj, region):
            inside = self._inside(nuc)
            if inside is not None:
                self._paint(occupied, region, inside, len(areas) + 1)
            areas.append(int(nuc[6]))
        d0, d1 = self.diameter_range
        mean_area = math.pi / 12 * (d0 * d0 + d0 * d1 + d1 * d1)  # E[π d² / 4], d ~ U
        bh, bw = self._block_shape(bi, bj)
        target = max(round(self.cover * bh * bw / mean_area), 1)
        placed: list[np.ndarray] = []
        for row, col, d in self.fixed:  # given nuclei (round), placed first, unchecked
            if (int(row) // BLOCK, int(col) // BLOCK) == (bi, bj):
                nuc = np.array([row, col, d / 2, d / 2, 0.0, rng.integers(2**53), 0.0])
                inside = self._inside(nuc)
                if inside is not None:
                    nuc[6] = int(inside[1].sum())
                    areas.append(int(nuc[6]))
                    self._paint(occupied, region, inside, len(areas))
                    placed.append(nuc)
        for _ in range(4 * target):
            if len(placed) >= target:
                break
            d, e = rng.uniform(d0, d1), rng.uniform(1.0, self.elongation)
            row, col = bi * BLOCK + rng.uniform(0, bh), bj * BLOCK + rng.uniform(0, bw)
            axes = (d / 2 * math.sqrt(e), d / 2 / math.sqrt(e))
            nuc = np.array([row, col, *axes, rng.uniform(0, math.pi), rng.integers(2**53), 0.0])
            inside = self._inside(nuc)
            if inside is None or int(inside[1].sum()) < 12:
                continue
            sl = (
                slice(inside[0][0].start - r0, inside[0][0].stop - r0),
                slice(inside[0][1].start - c0, inside[0][1].stop - c0),
            )
            under = occupied[sl][inside[1]]
            if under.any():
                if (under > 0).mean() > self.max_overlap:
                    continue
                ids, counts = np.unique(under[under > 0], return_counts=True)
                if np.any(counts > self.max_overlap * np.asarray(areas)[ids - 1]):
                    continue
            nuc[6] = int(inside[1].sum())
            areas.append(int(nuc[6]))
            self._paint(occupied, region, inside, len(areas))
            placed.append(nuc)
        return np.array(placed, dtype=np.float64).reshape(-1, _GEOMETRY)

    def _earlier_neighbours(self, bi: int, bj: int, region) -> list[np.ndarray]:
        """Nuclei of the neighbouring blocks placed before (bi, bj) whose crop can meet
        ``region``."""
        r0, c0, r1, c1 = region
        out = []
        for di, dj in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
            g = self.geometry.get((bi + di, bj + dj))
            if g is not None:
                near = (
                    (g[:, 0] + self.reach >= r0)
                    & (g[:, 0] - self.reach < r1)
                    & (g[:, 1] + self.reach >= c0)
                    & (g[:, 1] - self.reach < c1)
                )
                out += list(g[near])
        return out

    def _block_shape(self, bi: int, bj: int) -> tuple[int, int]:
        return min(BLOCK, self.shape[0] - bi * BLOCK), min(BLOCK, self.shape[1] - bj * BLOCK)

    def _inside(self, nuc: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """The nucleus' crop (plane slices) and its bool mask there (None when it lies
        outside the plane)."""
        sl, dist = self._distance(nuc)
        return None if dist is None else (sl, dist <= 1.0)

    def _distance(self, nuc: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray | None]:
        a = nuc[4]
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        return _ellipse_distance(nuc[:2], nuc[2:4], rot, self.shape, (1.0, 1.0))

    @staticmethod
    def _clip(sl: tuple[slice, ...], region: tuple[int, int, int, int]):
        """(window in a target covering ``region``, window in the crop ``sl``) of their
        intersection, or None."""
        r0, c0, r1, c1 = region
        a0, b0 = max(sl[0].start, r0), max(sl[1].start, c0)
        a1, b1 = min(sl[0].stop, r1), min(sl[1].stop, c1)
        if a1 <= a0 or b1 <= b0:
            return None
        target = np.s_[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0]
        source = np.s_[a0 - sl[0].start : a1 - sl[0].start, b0 - sl[1].start : b1 - sl[1].start]
        return target, source

    def _paint(self, target: np.ndarray, region, inside, value: int) -> None:
        """Set ``value`` where the nucleus mask ``inside`` = (crop slices, mask) meets
        ``target``, an array covering plane ``region``."""
        win = self._clip(inside[0], region)
        if win is not None:
            target[win[0]][inside[1][win[1]]] = value

    # ------------------------------------------------------------------ pixels
    def block(self, bi: int, bj: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and labels (int32) of one block (clipped at the plane's edge)."""
        margin = math.ceil(4 * self.blur) + 1
        region = self._block_region(bi, bj, margin)
        r0, c0, r1, c1 = region
        signal = np.zeros((r1 - r0, c1 - c0), np.float32)
        labels = np.zeros_like(signal, dtype=np.int32)
        for i in range(bi - 1, bi + 2):
            for j in range(bj - 1, bj + 2):
                g = self.geometry.get((i, j))
                if g is None:
                    continue
                for k, nuc in enumerate(g):
                    c = nuc[:2]
                    if (
                        c[0] + self.reach < r0
                        or c[0] - self.reach >= r1
                        or c[1] + self.reach < c0
                        or c[1] - self.reach >= c1
                    ):
                        continue
                    sl, dist = self._distance(nuc)
                    if dist is None:
                        continue
                    inside = dist <= 1.0
                    win = self._clip(sl, region)
                    if win is None:
                        continue
                    value = _nucleus_intensity(np.random.default_rng(int(nuc[5])), dist, inside)
                    signal[win[0]] += value[win[1]]
                    labels[win[0]][inside[win[1]]] = self.first_label[(i, j)] + k
        if self.blur > 0:
            signal = ndi.gaussian_filter(signal, self.blur)
        # crop the block out of its margin
        b0, b1 = bi * BLOCK - r0, bj * BLOCK - c0
        bh, bw = self._block_shape(bi, bj)
        signal = signal[b0 : b0 + bh, b1 : b1 + bw]
        labels = labels[b0 : b0 + bh, b1 : b1 + bw]
        rows = np.arange(bi * BLOCK, bi * BLOCK + bh)
        cols = np.arange(bj * BLOCK, bj * BLOCK + bw)
        h, w = self.shape
        y = -1 + 2 * rows / max(h - 1, 1)
        x = -1 + 2 * cols / max(w - 1, 1)
        background = np.clip(
            self.level + y[:, None] * self.slope[0] + x[None] * self.slope[1], 0, None
        )
        rng = np.random.default_rng([self.seed, bi, bj, 1])
        counts = rng.poisson((signal + background) * self.photons).astype(np.float32)
        counts += rng.normal(0.0, self.read_noise, counts.shape).astype(np.float32)
        out = counts * self.gain + self.offset
        image = np.clip(np.rint(out), 0, np.iinfo(self.dtype).max).astype(self.dtype)
        return image, labels

    def region(self, r0: int, c0: int, r1: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and labels of the plane region [r0:r1, c0:c1] (rendering only the
        blocks it meets)."""
        image = np.zeros((r1 - r0, c1 - c0), self.dtype)
        labels = np.zeros((r1 - r0, c1 - c0), np.int32)
        for bi in range(r0 // BLOCK, (r1 - 1) // BLOCK + 1):
            for bj in range(c0 // BLOCK, (c1 - 1) // BLOCK + 1):
                img, lab = self.block(bi, bj)
                br, bc = bi * BLOCK, bj * BLOCK
                a0, b0 = max(r0, br), max(c0, bc)
                a1, b1 = min(r1, br + img.shape[0]), min(c1, bc + img.shape[1])
                image[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = img[
                    a0 - br : a1 - br, b0 - bc : b1 - bc
                ]
                labels[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = lab[
                    a0 - br : a1 - br, b0 - bc : b1 - bc
                ]
        return image, labels

    def write(
        self, image: Any, labels: Any | None = None
    ) -> Generator[tuple[int, int], None, None]:
        """Render block after block into array-likes of the plane's shape (numpy, zarr:
        anything with numpy slice assignment); yields (blocks done, total)."""
        total = self.blocks[0] * self.blocks[1]
        for n, (bi, bj) in enumerate(np.ndindex(*self.blocks)):
            img, lab = self.block(bi, bj)
            sl = np.s_[
                bi * BLOCK : bi * BLOCK + img.shape[0], bj * BLOCK : bj * BLOCK + img.shape[1]
            ]
            image[sl] = img
            if labels is not None:
                labels[sl] = lab
            yield n + 1, total
