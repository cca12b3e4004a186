"""Addressing the 2D slices of an nD image by index tuples over its non-spatial axes.

Conventions (docs/architecture.md): a slice is addressed like napari addresses the
non-displayed axes — a tuple of ints in axis order over every axis that is neither one
of the two spatial axes (row, col), nor the RGB axis (only when ``rgb=True``: the last
axis, 3 or 4 samples), nor a fixed channel axis the user chose (``channel_axis`` +
``channel``). A 2D image has one slice, ``()``; ZYX has Z slices ``(z,)``; TZYX has
``(t, z)``. Without a fixed channel, a C axis is just another slice axis.

Reading a slice (:meth:`SliceLayout.read`) touches only that slice, for numpy, zarr and
dask arrays alike. A SliceLayout is the :class:`~.regions.RegionLayout` of whole-slice
embeddings: its region keys are the slice indices.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Index = tuple[int, ...]


@dataclass(frozen=True)
class SliceLayout:
    """How an nD image of ``shape`` splits into 2D slices.

    spatial: (row axis, col axis), non-negative. rgb: the last axis holds RGB(A)
    samples and stays in the slice. channel_axis / channel: a fixed channel, selected
    and excluded from the slice index.
    """

    shape: tuple[int, ...]
    spatial: tuple[int, int]
    rgb: bool = False
    channel_axis: int | None = None
    channel: int | None = None

    @classmethod
    def for_shape(
        cls,
        shape: Sequence[int],
        *,
        spatial: Sequence[int] | None = None,
        rgb: bool = False,
        channel_axis: int | None = None,
        channel: int | None = None,
    ) -> SliceLayout:
        """Layout with the last two axes spatial (before the RGB axis when ``rgb``),
        unless ``spatial`` names them (negative axes allowed)."""
        shape = tuple(int(s) for s in shape)
        nd = len(shape)
        if nd < 2 + bool(rgb):
            raise ValueError(f"need at least a 2D image{' + RGB axis' if rgb else ''}, got {shape}")
        if spatial is None:
            spatial = (nd - 3, nd - 2) if rgb else (nd - 2, nd - 1)
        sp = tuple(_axis(a, nd, "spatial axis") for a in spatial)
        if len(sp) != 2 or sp[0] == sp[1]:
            raise ValueError(f"need two distinct spatial axes, got {tuple(spatial)}")
        if channel_axis is not None:
            channel_axis = _axis(channel_axis, nd, "channel axis")
        layout = cls(shape, (sp[0], sp[1]), bool(rgb), channel_axis, channel)
        layout._check()
        return layout

    @classmethod
    def from_axes(cls, shape: Sequence[int], axes: str, channel: int | None = None) -> SliceLayout:
        """Layout from an axes string: ``Y`` rows, ``X`` cols, ``S`` RGB samples (last),
        ``C`` a channel axis (fixed when ``channel`` is given, else sliced like the
        other letters, e.g. ``T``, ``Z``). Example: ``"TZYX"``, ``"YXS"``, ``"CZYX"``."""
        axes = axes.upper()
        shape = tuple(shape)
        if len(axes) != len(shape):
            raise ValueError(f"axes {axes!r} has {len(axes)} letters, image has {len(shape)} axes")
        if len(set(axes)) != len(axes):
            raise ValueError(f"axes {axes!r} repeats a letter")
        if "Y" not in axes or "X" not in axes:
            raise ValueError(f"axes {axes!r} must contain Y and X")
        rgb = "S" in axes
        if rgb and axes[-1] != "S":
            raise ValueError(f"RGB samples axis S must be last, got axes {axes!r}")
        if channel is not None and "C" not in axes:
            raise ValueError(f"a channel was given but axes {axes!r} has no C")
        return cls.for_shape(
            shape,
            spatial=(axes.index("Y"), axes.index("X")),
            rgb=rgb,
            channel_axis=axes.index("C") if channel is not None else None,
            channel=channel,
        )

    def _check(self) -> None:
        nd = len(self.shape)
        if nd < 2:
            raise ValueError(f"need at least a 2D image, got shape {self.shape}")
        if self.rgb:
            if self.shape[-1] not in (3, 4):
                raise ValueError(f"rgb=True needs a last axis of 3 or 4, got shape {self.shape}")
            if nd - 1 in self.spatial:
                raise ValueError("the RGB axis (last) cannot be a spatial axis")
        if (self.channel_axis is None) != (self.channel is None):
            raise ValueError("give both channel_axis and channel, or neither")
        if self.channel_axis is not None:
            if self.channel_axis in self.spatial or (self.rgb and self.channel_axis == nd - 1):
                raise ValueError("the channel axis cannot be a spatial or the RGB axis")
            n = self.shape[self.channel_axis]
            if not 0 <= int(self.channel) < n:  # type: ignore[arg-type]
                raise ValueError(f"channel {self.channel} out of range for an axis of size {n}")
        if min(self.slice_size) < 1:
            raise ValueError(f"empty slices: image shape {self.shape}")

    # ------------------------------------------------------------------- geometry
    @property
    def slice_axes(self) -> tuple[int, ...]:
        """Axes the index tuple runs over, in axis order."""
        skip = {*self.spatial, self.channel_axis}
        if self.rgb:
            skip.add(len(self.shape) - 1)
        return tuple(a for a in range(len(self.shape)) if a not in skip)

    @property
    def slice_shape(self) -> tuple[int, ...]:
        """Number of slices along each slice axis (``()`` for a 2D image)."""
        return tuple(self.shape[a] for a in self.slice_axes)

    @property
    def slice_size(self) -> tuple[int, int]:
        """(H, W) of every slice."""
        return self.shape[self.spatial[0]], self.shape[self.spatial[1]]

    @property
    def n_slices(self) -> int:
        return int(np.prod(self.slice_shape, dtype=np.int64))

    def indices(self) -> Iterator[Index]:
        """All slice indices in C order."""
        return itertools.product(*(range(n) for n in self.slice_shape))

    # the RegionLayout protocol (store/regions.py): one region per slice, key = index
    @property
    def n_regions(self) -> int:
        return self.n_slices

    def region_keys(self) -> Iterator[Index]:
        return self.indices()

    def check_key(self, key: int | Iterable[int]) -> Index:
        return self.check_index(key)

    def check_index(self, index: int | Iterable[int]) -> Index:
        """Normalised index tuple (an int is accepted for one slice axis); raises
        IndexError with the valid ranges when out of bounds."""
        idx = (index,) if isinstance(index, (int, np.integer)) else tuple(index)
        if len(idx) != len(self.slice_shape):
            raise IndexError(
                f"slice index {idx} has {len(idx)} entries; this image has "
                f"{len(self.slice_shape)} slice axes (shape {self.slice_shape})"
            )
        out = []
        for i, n in zip(idx, self.slice_shape, strict=True):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise IndexError(f"slice index {idx} must hold ints")
            if not 0 <= int(i) < n:
                raise IndexError(
                    f"slice index {idx} out of range for slice shape {self.slice_shape}"
                )
            out.append(int(i))
        return tuple(out)

    def key(self, index: Index) -> tuple[int | slice, ...]:
        """Numpy-style key selecting slice ``index`` (ints on slice / channel axes)."""
        key: list[int | slice] = [slice(None)] * len(self.shape)
        for a, i in zip(self.slice_axes, self.check_index(index), strict=True):
            key[a] = i
        if self.channel_axis is not None:
            key[self.channel_axis] = int(self.channel)  # type: ignore[arg-type]
        return tuple(key)

    def read(self, image: Any, index: Index) -> np.ndarray:
        """Slice ``index`` of ``image`` as numpy (H, W) or (H, W, 3|4), reading only it.

        numpy / zarr arrays are indexed; dask arrays are indexed then computed (only that
        slice's chunks); other array-likes go through ``np.asarray`` after indexing.
        """
        if tuple(image.shape) != self.shape:
            raise ValueError(f"image shape {tuple(image.shape)} ≠ layout shape {self.shape}")
        part = image[self.key(index)]
        if hasattr(part, "compute") and hasattr(part, "dask"):
            part = part.compute(scheduler="sync")
        part = np.asarray(part)
        if self.spatial[0] > self.spatial[1]:  # remaining axes are in axis order
            part = np.swapaxes(part, 0, 1)
        return part

    # --------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "spatial_axes": list(self.spatial),
            "rgb": self.rgb,
            "channel_axis": self.channel_axis,
            "channel": self.channel,
            "slice_axes": list(self.slice_axes),
            "slice_shape": list(self.slice_shape),
            "original_size": list(self.slice_size),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SliceLayout:
        return cls.for_shape(
            d["shape"],
            spatial=d["spatial_axes"],
            rgb=d["rgb"],
            channel_axis=d["channel_axis"],
            channel=d["channel"],
        )


def _axis(a: int, nd: int, what: str) -> int:
    a = int(a)
    if not -nd <= a < nd:
        raise ValueError(f"{what} {a} out of range for a {nd}D image")
    return a % nd


def parse_slices(text: str | None, layout: SliceLayout) -> list[Index]:
    """Slice indices from a command-line range: one entry per slice axis, comma
    separated, each ``N``, ``A:B``, ``A:B:S`` or ``:`` (missing trailing entries mean
    all). Examples for TZYX: ``"0:50"`` (t 0–49, all z), ``"3,10:20"``, ``":,5"``.

    Bounds are checked, never clipped: for an axis of ``n`` slices ``N`` and ``A`` must
    lie in ``-n .. n-1`` and ``B`` in ``-n .. n`` (negative counts from the end, as in
    Python), else a ValueError names the valid range."""
    shape = layout.slice_shape
    if text is None or not text.strip():
        return list(layout.indices())
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > len(shape):
        raise ValueError(
            f"--slices {text!r} has {len(parts)} entries, the image has {len(shape)} slice "
            f"axes (slice shape {shape})"
        )
    ranges = []
    for part, n in itertools.zip_longest(parts, shape, fillvalue=":"):
        try:
            if ":" in part:
                bits = [int(b) if b.strip() else None for b in part.split(":")]
                if len(bits) > 3:
                    raise ValueError
                start, stop = bits[0], bits[1]
                if (start is not None and not -n <= start < n) or (
                    stop is not None and not -n <= stop <= n
                ):
                    raise ValueError(
                        f"--slices entry {part!r} out of range for an axis of {n} slices "
                        f"(valid: 0:{n}, indices 0..{n - 1})"
                    )
                r = range(n)[slice(*bits)]
            else:
                i = int(part)
                if not -n <= i < n:
                    raise ValueError(
                        f"--slices entry {i} out of range for an axis of {n} slices "
                        f"(valid indices 0..{n - 1})"
                    )
                r = range(i % n, i % n + 1)
        except ValueError as err:
            raise ValueError(
                str(err) if str(err).startswith("--slices") else f"bad --slices entry {part!r}"
            ) from None
        ranges.append(r)
    out = list(itertools.product(*ranges))
    if not out:
        raise ValueError(f"--slices {text!r} selects no slice (slice shape {shape})")
    return out
