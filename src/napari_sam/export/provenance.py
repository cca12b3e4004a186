"""Provenance of a label image: how every object was made, in order, so that the labels
can be re-created headless (:mod:`.replay`) and each object's origin shown in its table.

The format is JSON (schema ``napari-sam.provenance``, version :data:`SCHEMA_VERSION`;
documented in docs/export.md). It is saved with an export — in the OME-Zarr attributes
under the ``napari_sam`` key, beside a TIFF as ``<name>.napari_sam.json`` — and built
with :class:`Provenance`, whose ``add_*`` methods the interactive session calls once
per committed action::

    prov = Provenance.create(model, normalization, image_shape=(Z, H, W))
    prov.add_prompted((z,), [PromptRound(points=[(r, c)], labels=[1])], ids=[1])
    prov.add_automatic((z,), params, ids=list(range(2, 9)), scores={2: (0.93, 0.97)})
    prov.save("labels.napari_sam.json")

Coordinates are DATA coordinates of the image (pixels, not world units): points
(row, col), boxes (row_min, col_min, row_max, col_max). ``index`` is the slice's index
tuple over the image's non-displayed axes (the channel axis included when there is
one), e.g. ``(z,)`` or ``(t, z)``; for volume actions it is the leading index (``()``
for a (Z, Y, X) image, ``(t,)`` for (T, Z, Y, X)).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "napari-sam.provenance"
SCHEMA_VERSION = 1
KINDS = ("click", "box", "points+box", "automatic", "propagated", "edited")


class ProvenanceError(ValueError):
    """A provenance document is invalid or cannot be used."""


@dataclass(frozen=True)
class PromptRound:
    """One round of prompts on a slice. points: (N, 2) (row, col); labels: (N,) 1
    positive / 0 negative; box: (row_min, col_min, row_max, col_max) or None. Round
    k > 0 of an action refines round k − 1: its best low-res logits are the mask input
    (SAM's interactive correction loop)."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if len(self.points) != len(self.labels):
            raise ProvenanceError(f"{len(self.points)} points but {len(self.labels)} labels")
        if not self.points and self.box is None:
            raise ProvenanceError("a prompt round needs points or a box")

    @classmethod
    def create(cls, points: Any = None, labels: Any = None, box: Any = None) -> PromptRound:
        pts = () if points is None else tuple(
            (float(r), float(c)) for r, c in np.asarray(points, float).reshape(-1, 2)
        )
        lab = () if labels is None else tuple(int(v) for v in np.asarray(labels).ravel())
        bx = None if box is None else tuple(float(v) for v in np.asarray(box, float).ravel())
        if bx is not None and len(bx) != 4:
            raise ProvenanceError(f"a box has 4 numbers, got {bx}")
        return cls(pts, lab, bx)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": [list(p) for p in self.points],
            "labels": list(self.labels),
            "box": None if self.box is None else list(self.box),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PromptRound:
        return cls.create(d.get("points") or None, d.get("labels") or None, d.get("box"))

    @property
    def kind(self) -> str:
        if self.box is None:
            return "click"
        return "points+box" if self.points else "box"


@dataclass
class Provenance:
    """A provenance document: header (model, precision, normalisation, image) and the
    list of actions in the order they were committed (plain JSON dicts)."""

    model: dict[str, Any]
    normalization: dict[str, Any]
    image: dict[str, Any]
    tiling: dict[str, Any] | None = None
    package_version: str = ""
    created: str = ""
    actions: list[dict[str, Any]] = field(default_factory=list)

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        model: Any,
        normalization: Any = None,
        *,
        image_shape: Sequence[int],
        rgb: bool = False,
        channel_axis: int | None = None,
        precision: str | None = None,
        source: str | None = None,
        checkpoint: str | None = None,
        calibration: Any = None,
        tiling: Mapping[str, Any] | None = None,
    ) -> Provenance:
        """model: a :class:`~napari_sam.engine.loader.SamModel` (or a dict with name,
        weights_hash, precision). normalization: an
        :class:`~napari_sam.engine.image.Normalization` (default: the default one).
        image_shape: the image's data shape (RGB axis included). precision: the
        precision the model was loaded with (``"fp32"`` = exact mode); default the
        model's (``"fp32"`` when exact). calibration: the labels'
        :class:`~napari_sam.export.calibration.Calibration` (used by replay's output).
        tiling: the :meth:`~napari_sam.engine.tiling.TileGrid.to_dict` of the session's
        tiles when its slices were tiled (prompted actions then name their tile)."""
        from .. import __version__

        if isinstance(model, Mapping):
            info = dict(model)
        else:
            info = {
                "name": model.name,
                "weights_hash": model.weights_hash,
                "precision": "fp32" if model.exact else model.precision,
            }
        if precision is not None:
            info["precision"] = precision
        if checkpoint is not None:
            info["checkpoint"] = str(checkpoint)
        if normalization is None:
            from ..engine.image import Normalization

            normalization = Normalization()
        sig = normalization if isinstance(normalization, Mapping) else normalization.signature()
        image = {
            "shape": [int(s) for s in image_shape],
            "rgb": bool(rgb),
            "channel_axis": channel_axis,
            "source": source,
            "calibration": None if calibration is None else calibration.to_dict(),
        }
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        tiles = None if tiling is None else dict(tiling)
        return cls(info, dict(sig), image, tiles, __version__, now)

    # ------------------------------------------------------------------ actions
    def add_prompted(
        self,
        index: Sequence[int],
        rounds: Sequence[PromptRound],
        ids: Iterable[int],
        *,
        overwrite: bool = False,
        predicted_iou: float | None = None,
        tile: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """An object committed from clicks and/or a box on slice ``index``. ``ids``: the
        id written (empty when the mask only covered other objects); ``tile``: (row,
        col) of the tile that answered it on a tiled slice."""
        if not rounds:
            raise ProvenanceError("a prompted action needs at least one prompt round")
        ids = _ints(ids)
        scores = {} if predicted_iou is None or not ids else {
            str(ids[0]): {"predicted_iou": float(predicted_iou), "stability_score": None}
        }
        return self._add(
            rounds[-1].kind, index, ids, overwrite,
            rounds=[r.to_dict() for r in rounds], scores=scores,
            tile=None if tile is None else _ints(tile),
        )

    def add_automatic(
        self,
        index: Sequence[int],
        params: Mapping[str, Any],
        ids: Iterable[int],
        *,
        overwrite: bool = False,
        scores: Mapping[int, tuple[float, float]] | None = None,
        volume: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Automatic masks ("segment everything") on slice ``index`` — or, with
        ``volume`` (``{"link": bool, "link_iou": float, "min_slices": int}``), on every
        slice of the volume at leading index ``index`` — merged with ids above the
        largest id. params: the AutomaticMaskGenerator keyword arguments. scores:
        id → (predicted IoU, stability score)."""
        extra = {} if volume is None else {"volume": dict(volume)}
        sc = {
            str(int(k)): {"predicted_iou": float(v[0]), "stability_score": float(v[1])}
            for k, v in (scores or {}).items()
        }
        return self._add(
            "automatic", index, _ints(ids), overwrite, params=dict(params), scores=sc, **extra
        )

    def add_propagated(
        self,
        index: Sequence[int],
        objects: Iterable[int],
        params: Mapping[str, Any],
        ids: Iterable[int],
        *,
        seed: tuple[int, Sequence[PromptRound]] | None = None,
    ) -> dict[str, Any]:
        """Propagation of ``objects`` through the volume at leading index ``index``
        (written only into empty voxels). params: the Propagator keyword arguments
        (mode, iou_stop, …, stop_slices as {id: [z, …]}). seed: (z, rounds) of an
        uncommitted preview that was propagated as a new object (it gets the next free
        id)."""
        extra: dict[str, Any] = {"objects": _ints(objects)}
        if seed is not None:
            extra["seed"] = {"z": int(seed[0]), "rounds": [r.to_dict() for r in seed[1]]}
        return self._add("propagated", index, _ints(ids), False, params=_jsonable(params),
                         **extra)

    def add_edited(
        self, origin: Sequence[int], mask: np.ndarray, value: int, ids: Iterable[int] | None = None
    ) -> dict[str, Any]:
        """A manual edit: ``value`` (0 = erase) painted over the bool ``mask`` whose
        first voxel is at ``origin`` in the label array (any number of axes)."""
        mask = np.asarray(mask, bool)
        if len(origin) != mask.ndim:
            raise ProvenanceError(f"origin {tuple(origin)} has not {mask.ndim} axes")
        edit = {
            "origin": _ints(origin),
            "shape": list(mask.shape),
            "rle": rle_encode(mask),
            "value": int(value),
        }
        ids = _ints(ids if ids is not None else ([value] if value else []))
        return self._add("edited", (), ids, True, edit=edit)

    def _add(self, kind: str, index, ids, overwrite, **extra: Any) -> dict[str, Any]:
        action = {
            "kind": kind,
            "index": _ints(index),
            "tile": None,
            "ids": list(ids),
            "overwrite": bool(overwrite),
            "params": {},
            "scores": {},
            **extra,
        }
        self.actions.append(action)
        return action

    # ------------------------------------------------------------------ queries
    def objects(self) -> dict[int, dict[str, Any]]:
        """id → {"source": kind of the action that created it, "edited": touched by a
        later manual edit, "predicted_iou", "stability_score" (None when unknown)}."""
        out: dict[int, dict[str, Any]] = {}
        for a in self.actions:
            for i in a.get("ids", []):
                if i in out:
                    if a["kind"] == "edited":
                        out[i]["edited"] = True
                    continue
                sc = a.get("scores", {}).get(str(i), {})
                out[i] = {
                    "source": a["kind"],
                    "edited": a["kind"] == "edited",
                    "predicted_iou": sc.get("predicted_iou"),
                    "stability_score": sc.get("stability_score"),
                }
        return out

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "package_version": self.package_version,
            "created": self.created,
            "model": self.model,
            "normalization": self.normalization,
            "tiling": self.tiling,
            "image": self.image,
            "actions": self.actions,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        if not isinstance(d, Mapping) or d.get("schema") != SCHEMA:
            raise ProvenanceError("not a napari-sam provenance document (schema missing)")
        version = d.get("version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ProvenanceError(
                f"provenance version {version!r} is newer than this napari-sam reads "
                f"({SCHEMA_VERSION}); update napari-sam"
            )
        for key in ("model", "normalization", "image", "actions"):
            if key not in d:
                raise ProvenanceError(f"provenance has no {key!r}")
        for i, a in enumerate(d["actions"]):
            if a.get("kind") not in KINDS:
                raise ProvenanceError(f"action {i}: unknown kind {a.get('kind')!r}")
        return cls(
            dict(d["model"]), dict(d["normalization"]), dict(d["image"]), d.get("tiling"),
            str(d.get("package_version", "")), str(d.get("created", "")),
            [dict(a) for a in d["actions"]],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomically)."""
        from .atomic import write_text

        return write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Provenance:
        """From a JSON file, a TIFF export's sidecar, or an OME-Zarr export."""
        p = Path(path)
        if p.is_dir():
            from .ome_zarr import read_export_attrs

            block = read_export_attrs(p)
            d = None if block is None else block.get("provenance")
        else:
            try:
                d = json.loads(p.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise
            except (OSError, ValueError) as err:
                raise ProvenanceError(f"cannot read {p}: {err}") from None
            if isinstance(d, Mapping) and "napari_sam" in d:  # an export sidecar
                d = d["napari_sam"].get("provenance")
        if d is None:
            raise ProvenanceError(f"{p} holds no napari-sam provenance")
        return cls.from_dict(d)


def rle_encode(mask: np.ndarray) -> list[int]:
    """Run lengths of a bool array in C order, starting with a (possibly empty) run of
    False: [n_false, n_true, n_false, …]."""
    flat = np.asarray(mask, bool).ravel()
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0, *runs]) if flat.size and flat[0] else runs


def rle_decode(runs: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`rle_encode`."""
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, np.asarray(runs, dtype=np.int64))
    if flat.size != int(np.prod(shape)):
        raise ProvenanceError(f"edit run lengths cover {flat.size} voxels, not {tuple(shape)}")
    return flat.reshape(tuple(shape))


def _ints(values: Iterable[int]) -> list[int]:
    return [int(v) for v in values]


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Propagator parameters as JSON: ``stop_slices`` {id: {z, …}} → {"id": [z, …]}."""
    out = dict(params)
    stops = out.get("stop_slices")
    if stops is not None:
        out["stop_slices"] = {str(k): sorted(int(z) for z in v) for k, v in stops.items()}
    return out
