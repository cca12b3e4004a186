"""Axes and physical calibration of a label image: names, types, scale, translate, units.

One :class:`Calibration` describes where the voxels of a label array lie in the world,
exactly as napari does: the centre of voxel ``i`` along an axis is at
``translate + scale * i``. Axis names follow OME-NGFF (``t``, ``c``, ``z``, ``y``, ``x``;
types ``time`` / ``channel`` / ``space``); units are NGFF (UDUNITS-2) names such as
``micrometer`` or ``second``, or None when unknown (napari's default ``pixel``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
DEFAULT_AXES = {
    2: ("y", "x"),
    3: ("z", "y", "x"),
    4: ("t", "z", "y", "x"),
    5: ("t", "c", "z", "y", "x"),
}
_LENGTH = "meter"
_SI = ("atto", "femto", "pico", "nano", "micro", "milli", "centi", "deci", "")
_SI += ("hecto", "kilo", "mega", "giga", "tera", "peta", "exa")
# NGFF 0.5 axis units (UDUNITS-2 names)
SPACE_UNITS = frozenset(
    [p + _LENGTH for p in _SI] + ["angstrom", "foot", "inch", "mile", "parsec", "yard"]
)
TIME_UNITS = frozenset([p + "second" for p in _SI] + ["day", "hour", "minute"])
# OME-XML unit symbols of the common NGFF units (OME-TIFF PhysicalSize*Unit)
OME_SYMBOLS = {
    "angstrom": "Å",
    "picometer": "pm",
    "nanometer": "nm",
    "micrometer": "µm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
    "nanosecond": "ns",
    "microsecond": "µs",
    "millisecond": "ms",
    "second": "s",
    "minute": "min",
    "hour": "h",
}


@dataclass(frozen=True)
class Calibration:
    """Per-axis description of a label array of ``len(axes)`` dimensions.

    axes: NGFF axis names in array order (e.g. ``("z", "y", "x")``); scale: voxel size
    per axis (> 0); translate: world position of voxel 0's centre per axis; units: NGFF
    unit name per axis or None when unknown.
    """

    axes: tuple[str, ...]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: tuple[str | None, ...]

    def __post_init__(self) -> None:
        n = len(self.axes)
        if not 2 <= n <= 5:
            raise ValueError(f"OME-NGFF labels have 2 to 5 axes, got {n}")
        if not (len(self.scale) == len(self.translate) == len(self.units) == n):
            raise ValueError("axes, scale, translate and units must have the same length")
        check_axis_order(self.axes)
        if not all(np.isfinite(s) and s > 0 for s in self.scale):
            raise ValueError(f"scale must be finite and > 0, got {self.scale}")
        if not all(np.isfinite(t) for t in self.translate):
            raise ValueError(f"translate must be finite, got {self.translate}")

    @classmethod
    def default(cls, ndim: int) -> Calibration:
        """Unit voxels at the origin, default axis names for ``ndim`` axes."""
        if ndim not in DEFAULT_AXES:
            raise ValueError(f"labels must have 2 to 5 axes, got {ndim}")
        return cls(DEFAULT_AXES[ndim], (1.0,) * ndim, (0.0,) * ndim, (None,) * ndim)

    @classmethod
    def create(
        cls,
        ndim: int,
        scale: Sequence[float] | None = None,
        translate: Sequence[float] | None = None,
        units: Sequence[Any] | None = None,
        axes: Sequence[str] | None = None,
    ) -> Calibration:
        """From napari-style per-axis values; missing ones default (unit scale, zero
        translate, unknown units, axis names from :data:`DEFAULT_AXES` — names given
        that are not valid NGFF axes in NGFF order are replaced by the defaults)."""
        base = cls.default(ndim)
        names = _axis_names(axes, ndim)
        sc = base.scale if scale is None else tuple(float(s) for s in scale)
        tr = base.translate if translate is None else tuple(float(t) for t in translate)
        un = base.units
        if units is not None:
            un = tuple(_unit_name(u, a) for u, a in zip(units, names, strict=True))
        return cls(names, sc, tr, un)

    @classmethod
    def from_layer_meta(cls, meta: Mapping[str, Any], ndim: int) -> Calibration:
        """From a napari layer's state (``layer.as_layer_data_tuple()[1]``, the ``meta``
        of an npe2 writer): scale, translate, units, axis_labels. A rotation, shear or
        affine cannot be stored in OME-NGFF 0.5 or OME-TIFF: ValueError."""
        for key in ("rotate", "shear", "affine"):
            if key in meta and meta[key] is not None:
                value = np.asarray(meta[key], dtype=float)
                ident = {
                    "rotate": np.eye(ndim),
                    "shear": np.zeros_like(value),
                    "affine": np.eye(ndim + 1),
                }[key]
                if value.shape == ident.shape and not np.allclose(value, ident):
                    raise ValueError(
                        f"the layer has a {key} transform; exports store only scale and "
                        "translate: reset it (layer properties) before saving"
                    )
        return cls.create(
            ndim, meta.get("scale"), meta.get("translate"), meta.get("units"),
            meta.get("axis_labels"),
        )

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def types(self) -> tuple[str, ...]:
        """NGFF axis types (``space`` / ``time`` / ``channel``)."""
        return tuple(AXIS_TYPES[a] for a in self.axes)

    @property
    def space_axes(self) -> tuple[int, ...]:
        """Indices of the spatial axes."""
        return tuple(i for i, t in enumerate(self.types) if t == "space")

    @property
    def voxel_size(self) -> float:
        """Physical area (2 space axes) or volume (3) of one voxel."""
        return float(np.prod([self.scale[i] for i in self.space_axes]))

    @property
    def space_unit(self) -> str | None:
        """The unit shared by all spatial axes, or None (unknown or mixed)."""
        units = {self.units[i] for i in self.space_axes}
        return units.pop() if len(units) == 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "axes": list(self.axes),
            "types": list(self.types),
            "scale": list(self.scale),
            "translate": list(self.translate),
            "units": list(self.units),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        return cls(
            tuple(d["axes"]),
            tuple(float(s) for s in d["scale"]),
            tuple(float(t) for t in d["translate"]),
            tuple(d["units"]),
        )

    def napari_kwargs(self) -> dict[str, Any]:
        """Layer keyword arguments (scale, translate, axis_labels, units)."""
        kw: dict[str, Any] = {
            "scale": self.scale,
            "translate": self.translate,
            "axis_labels": self.axes,
        }
        if all(u is not None for u in self.units):
            kw["units"] = self.units
        return kw


def check_axis_order(axes: Sequence[str]) -> None:
    """NGFF 0.5 rules: known names, unique, time first, then channel, then 2–3 spatial
    axes (ValueError otherwise)."""
    axes = tuple(axes)
    if len(set(axes)) != len(axes) or any(a not in AXIS_TYPES for a in axes):
        raise ValueError(f"axes must be distinct names among t, c, z, y, x, got {axes}")
    rank = {"time": 0, "channel": 1, "space": 2}
    ranks = [rank[AXIS_TYPES[a]] for a in axes]
    nspace = ranks.count(2)
    if ranks != sorted(ranks) or nspace not in (2, 3):
        raise ValueError(f"axes {axes} are not in NGFF order (t, c, then 2-3 of z, y, x)")


def _axis_names(labels: Sequence[str] | None, ndim: int) -> tuple[str, ...]:
    default = Calibration.default(ndim).axes
    if labels is None:
        return default
    names = tuple(str(a).lower() for a in labels)
    if len(names) != ndim:
        return default
    try:
        check_axis_order(names)
    except ValueError:
        if not all(n.lstrip("-").isdigit() for n in names):  # napari's defaults: '-3', ...
            warnings.warn(
                f"axis labels {tuple(labels)} are not OME-NGFF axes; writing {default}",
                stacklevel=3,
            )
        return default
    return names


def _unit_name(unit: Any, axis: str) -> str | None:
    """A napari / pint unit → NGFF unit name, or None (pixel, unknown)."""
    if unit is None:
        return None
    name = str(unit).strip()
    if name in ("", "pixel", "px", "dimensionless"):
        return None
    aliases = {"um": "micrometer", "µm": "micrometer", "nm": "nanometer", "mm": "millimeter",
               "s": "second", "ms": "millisecond", "sec": "second", "min": "minute"}
    name = aliases.get(name, name)
    allowed = TIME_UNITS if AXIS_TYPES[axis] == "time" else SPACE_UNITS
    if AXIS_TYPES[axis] == "channel" or name not in allowed:
        warnings.warn(f"unit {name!r} of axis {axis!r} is not an OME-NGFF unit; not stored",
                      stacklevel=4)
        return None
    return name
