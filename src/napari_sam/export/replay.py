"""Headless replay: re-create a label image from its provenance (:mod:`.provenance`) by
re-running every action in order on the image, with the recorded model, precision and
normalisation.

Commit semantics are the interactive ones (``engine.labels``): a prompted object gets
the next free id (1 + the largest id) and never overwrites other objects unless the
action says so; automatic masks are merged with their ids shifted above the largest id;
propagation writes only into empty voxels; a manual edit paints its recorded voxels.
In fp32 (the exact mode) the result equals the labels the actions produced; the ids each
action wrote are compared with the recorded ones and differences reported.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.decode.predictor import Predictor
from ..engine.embedding import Embedding
from ..engine.image import Normalization
from ..engine.labels import merge_new_objects, next_free_id, paint_mask
from ..engine.loader import SamModel, short_hash
from ..engine.progress import Progress, run_to_end
from .provenance import PromptRound, Provenance, ProvenanceError, rle_decode

EMBEDDINGS_IN_RAM = 64  # slices kept while replaying


@dataclass
class ReplayResult:
    """labels: the re-created label image (image shape without RGB / channel axes);
    mismatches: one line per action whose written ids differ from the recorded ones."""

    labels: np.ndarray
    mismatches: list[str] = field(default_factory=list)


def replay(
    provenance: Provenance, image: Any, model: SamModel | None = None, **kwargs: Any
) -> ReplayResult:
    """Run :func:`iter_replay` to the end."""
    return run_to_end(iter_replay(provenance, image, model, **kwargs))


def iter_replay(
    provenance: Provenance,
    image: Any,
    model: SamModel | None = None,
    *,
    device: str = "auto",
    checkpoint: str | None = None,
    labels_dtype: Any = np.uint32,
) -> Generator[Progress, None, ReplayResult]:
    """Replay ``provenance`` on ``image`` (numpy / dask / zarr, the recorded shape);
    yields Progress after each action. model: an already loaded model (its weights
    hash must match the recorded one); None → loaded by the recorded name (or
    ``checkpoint``) with the recorded precision."""
    prov = provenance
    shape = tuple(int(s) for s in image.shape)
    if list(shape) != list(prov.image["shape"]):
        raise ProvenanceError(
            f"image shape {shape} is not the recorded {tuple(prov.image['shape'])}: "
            "replay needs the image the labels were made on"
        )
    model = _model(prov, model, device, checkpoint)
    run = _Replayer(prov, image, model, np.dtype(labels_dtype))
    n = len(prov.actions)
    for i, action in enumerate(prov.actions):
        ids = run.apply(action)
        if ids != [int(v) for v in action.get("ids", [])]:
            run.mismatches.append(
                f"action {i} ({action['kind']}): wrote ids {ids}, recorded {action.get('ids')}"
            )
        yield Progress(i + 1, n, f"action {i + 1}/{n}: {action['kind']}")
    return ReplayResult(run.labels, run.mismatches)


def normalization_from_signature(sig: dict[str, Any]) -> Normalization:
    """The :class:`Normalization` whose ``signature()`` is ``sig``."""
    rule = Normalization().signature()["rule"]
    if sig.get("rule") != rule:
        raise ProvenanceError(f"normalisation rule {sig.get('rule')!r} is not {rule!r}")
    cl = sig.get("contrast_limits")
    return Normalization(
        contrast_limits=None if cl is None else (float(cl[0]), float(cl[1])),
        percentiles=tuple(float(p) for p in sig["percentiles"]),
    )


def _model(prov: Provenance, model: SamModel | None, device: str, checkpoint) -> SamModel:
    info = prov.model
    if model is None:
        from ..engine.loader import load_model

        model = load_model(
            info["name"], checkpoint=checkpoint or info.get("checkpoint"), device=device,
            precision=info.get("precision", "fp32"),
        )
    if info.get("weights_hash") and model.weights_hash != info["weights_hash"]:
        raise ProvenanceError(
            f"model {model.name!r} has other weights ({short_hash(model.weights_hash)}) than the "
            f"recorded {short_hash(info['weights_hash'])}: give the checkpoint the labels were "
            "made with"
        )
    return model


class _Replayer:
    def __init__(self, prov: Provenance, image, model: SamModel, dtype: np.dtype) -> None:
        self.image, self.model = image, model
        self.norm = normalization_from_signature(prov.normalization)
        self.rgb = bool(prov.image.get("rgb", False))
        self.channel_axis = prov.image.get("channel_axis")
        shape = list(image.shape[:-1] if self.rgb else image.shape)
        if self.channel_axis is not None:
            del shape[self.channel_axis]
        self.labels = np.zeros(shape, dtype)
        self.mismatches: list[str] = []
        self._encoder = Predictor(model, self.norm)
        self._ram: OrderedDict[tuple[int, ...], Embedding] = OrderedDict()
        self.tiling = prov.tiling

    # ------------------------------------------------------------------ helpers
    def embedding(self, index: tuple[int, ...]) -> Embedding:
        emb = self._ram.get(index)
        if emb is None:
            emb = self._encoder.compute_embedding(self.slice(index))
            self._ram[index] = emb
            while len(self._ram) > EMBEDDINGS_IN_RAM:
                self._ram.popitem(last=False)
        self._ram.move_to_end(index)
        return emb

    def slice(self, index: tuple[int, ...]) -> np.ndarray:
        return np.asarray(self.image[index])

    def labels_index(self, index: tuple[int, ...]) -> tuple[int, ...]:
        if self.channel_axis is None:
            return index
        return index[: self.channel_axis] + index[self.channel_axis + 1 :]

    def mask_from_rounds(
        self,
        index: tuple[int, ...],
        rounds: list[dict],
        emb: Embedding | None = None,
        origin: tuple[int, int] = (0, 0),
    ) -> np.ndarray:
        """The preview mask of a chain of prompt rounds, as the interactive session
        computes it (one click alone: best of 3; refinements get the previous logits).
        emb: the embedding to decode on (default the slice's); origin: (row, col) of its
        region in the slice (prompts are shifted into it; the mask is the region's)."""
        p = Predictor(self.model, self.norm)
        p.set_embedding(self.embedding(index) if emb is None else emb)
        shift = np.array(origin, float)
        logits = None
        for k, d in enumerate(rounds):
            r = PromptRound.from_dict(d)
            mask_input = logits if k > 0 else None
            multimask = r.box is None and len(r.points) == 1 and mask_input is None
            pts = [tuple(np.array(q) - shift) for q in r.points]
            box = None if r.box is None else tuple(np.array(r.box) - np.tile(shift, 2))
            res = p.predict(
                points=pts or None,
                labels=list(r.labels) or None,
                box=box,
                mask_input=mask_input,
                multimask=multimask,
                best_only=True,
            )
            logits = res.logits[0]
        return res.masks[0]

    def tiled_mask(self, index: tuple[int, ...], rounds: list[dict], tile: tuple) -> np.ndarray:
        """The preview mask of a chain of prompt rounds answered on ``tile`` of a tiled
        slice, as the session computes it: the tile's outer region embedded at native
        resolution, the prompts shifted into it, the mask placed back at slice size."""
        from ..engine.tiling import TileGrid, check_tile_embedding, place

        grid = TileGrid.from_dict(self.tiling)
        plane = tuple(int(v) for v in self.labels.shape[-2:])
        if tuple(grid.plane) != plane:
            raise ProvenanceError(f"recorded tiles of {grid.plane} px do not fit {plane} slices")
        tile = grid.check(tile)
        key = (*index, *tile)
        emb = self._ram.get(key)
        if emb is None:
            data = grid.read(self.image[index], tile)
            emb = check_tile_embedding(grid, tile, self._encoder.compute_embedding(data, False))
            self._ram[key] = emb
            while len(self._ram) > EMBEDDINGS_IN_RAM:
                self._ram.popitem(last=False)
        region = grid.outer(tile)
        return place(self.mask_from_rounds(index, rounds, emb, region[:2]), region, plane)

    def merge(self, key: tuple[int, ...], block: np.ndarray, overwrite: bool) -> list[int]:
        """Write the non-zero voxels of ``block`` into ``labels[key]`` (only into empty
        voxels unless ``overwrite``); returns the ids of the voxels that changed."""
        view = self.labels[key] if key else self.labels
        target = (block > 0) & (block != view)
        if not overwrite:
            target &= view == 0
        values = block[target].astype(self.labels.dtype, copy=False)
        view[target] = values
        return [int(v) for v in np.unique(values)]

    # ------------------------------------------------------------------ actions
    def apply(self, a: dict[str, Any]) -> list[int]:
        handler: Callable[[dict[str, Any]], list[int]] = {
            "click": self._prompted,
            "box": self._prompted,
            "points+box": self._prompted,
            "automatic": self._automatic,
            "propagated": self._propagated,
            "edited": self._edited,
        }[a["kind"]]
        if self.tiling is not None and a["kind"] in ("automatic", "propagated"):
            raise ProvenanceError(  # the widget records tiled ones as edits
                f"a {a['kind']} action on tiled slices cannot be replayed by this version"
            )
        if a.get("tile") is not None and self.tiling is None:
            raise ProvenanceError("an action names a tile but the provenance has no tiling")
        return handler(a)

    def _prompted(self, a: dict[str, Any]) -> list[int]:
        index = tuple(a["index"])
        if a.get("tile") is not None:
            mask = self.tiled_mask(index, a["rounds"], tuple(a["tile"]))
        else:
            mask = self.mask_from_rounds(index, a["rounds"])
        plane = self.labels[self.labels_index(index)]
        label_id, written = paint_mask(
            plane, mask, label_id=next_free_id(self.labels), overwrite=bool(a["overwrite"])
        )
        return [label_id] if written.any() else []

    def _automatic(self, a: dict[str, Any]) -> list[int]:
        from ..engine.amg import AutomaticMaskGenerator

        index = tuple(a["index"])
        amg = AutomaticMaskGenerator(self.model, normalization=self.norm, **a["params"])
        crops = amg.crop_n_layers > 0

        def image(i: tuple[int, ...]) -> np.ndarray | None:
            return self.slice(i) if crops else None

        volume = a.get("volume")
        if volume is None:
            plane = amg.generate(self.embedding(index), image=image(index)).labels
        else:
            from ..engine.amg.volume import VolumeAmg

            nz = self.labels.shape[len(self.labels_index(index))]
            vol = VolumeAmg(
                amg,
                lambda z: self.embedding((*index, z)),
                nz,
                image=lambda z: image((*index, z)),
                link=bool(volume.get("link", True)),
                link_iou=float(volume["link_iou"]),
                min_slices=int(volume["min_slices"]),
            )
            plane = run_to_end(vol.run())
        plane = np.asarray(plane, np.uint32)
        if not plane.any():
            return []
        # as the widget and the CLI merge them (session.commit.plan_automatic_write):
        # consecutive ids above the largest, rims of existing objects dropped
        key = self.labels_index(index)
        existing = self.labels[key] if key else self.labels
        block, _n = merge_new_objects(
            existing, plane, overwrite=bool(a["overwrite"]), first_id=next_free_id(self.labels)
        )
        return self.merge(key, block, bool(a["overwrite"]))

    def _propagated(self, a: dict[str, Any]) -> list[int]:
        from ..engine.propagate import Propagator

        lead = tuple(a["index"])
        key = self.labels_index(lead)
        seeds = np.array(self.labels[key] if key else self.labels)
        objects = {int(o) for o in a.get("objects", [])}
        seed = a.get("seed")
        if seed is not None:
            z0 = int(seed["z"])
            mask = self.mask_from_rounds((*lead, z0), seed["rounds"])
            new_id = next_free_id(self.labels)
            seeds[z0][mask & (seeds[z0] == 0)] = new_id
            objects.add(new_id)
        params = dict(a.get("params", {}))
        if params.get("stop_slices") is not None:
            params["stop_slices"] = {int(k): set(v) for k, v in params["stop_slices"].items()}
        prop = Propagator(
            self.model, lambda z: self.embedding((*lead, z)), seeds, sorted(objects),
            prefetch=False, **params,
        )
        result = run_to_end(prop.run())
        self.merge(key, result, overwrite=False)
        return sorted(objects)

    def _edited(self, a: dict[str, Any]) -> list[int]:
        e = a["edit"]
        mask = rle_decode(e["rle"], e["shape"])
        region = tuple(slice(o, o + s) for o, s in zip(e["origin"], e["shape"], strict=True))
        self.labels[region][mask] = int(e["value"])
        return [int(v) for v in a.get("ids", [])]
