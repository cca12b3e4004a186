"""``EmbeddingStore``: per-slice SAM image embeddings in a zarr v3 group.

On disk (``STORE.zarr/``)::

    zarr.json            group; attribute "napari_sam" = signature (schema.build_attrs)
    embeddings/          (*slice_shape, C, h, w) float16|float32, one chunk per slice
    complete/            (*slice_shape, 32) uint8, one chunk per slice: the Marker
                         (fingerprint of the slice data + checksum of its chunk)

Write order per slice: delete the marker, write the embedding chunk, write the marker.
zarr's local store writes each chunk to a temporary file and renames it, so a process
killed at any moment leaves every slice either complete (chunk and marker present and
consistent) or missing; a reader never trusts a chunk without its marker, and checks the
marker's checksum of the chunk too. Each slice has its own chunks, so concurrent writers
(Dask workers) never touch the same file; group attributes are written once, at creation.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import zarr

from ..engine.image import Normalization
from ..engine.predictor import Embedding
from ..engine.transforms import resized_shape
from .files import (
    StaleSliceError,
    StoreError,
    StoreMismatchError,
    StoreWriteError,
    is_empty_dir,
    read_attrs,
    remove_store,
    summarize,
    write_errors,
)
from .schema import (
    ATTRS_KEY,
    MARKER_SIZE,
    Marker,
    ModelSignature,
    build_attrs,
    chunk_checksum,
    fingerprint,
    signature_diff,
)
from .slicing import Index, SliceLayout

DEFAULT_DTYPE = "float16"  # measured: docs/cache.md, benchmarks/store_dtype.py
OnMismatch = Literal["error", "overwrite"]


class EmbeddingStore:
    """Embeddings of the 2D slices of one image, for one model and normalisation.

    Open with :meth:`open`. ``get`` / ``put`` address slices by index tuples over the
    image's slice axes (see :class:`~napari_sam.store.slicing.SliceLayout`).
    """

    def __init__(
        self,
        path: Path,
        group: zarr.Group,
        attrs: dict[str, Any],
        model: ModelSignature,
        sam_model: Any = None,
        image: Any = None,
        on_mismatch: OnMismatch = "error",
        read_only: bool = False,
    ) -> None:
        self.path = path
        self.attrs = attrs
        self.model = model
        self.sam_model = sam_model
        self.layout = SliceLayout.from_dict(attrs["image"])
        norm = attrs["normalization"]
        cl = norm["contrast_limits"]
        self.normalization = Normalization(
            None if cl is None else tuple(cl), tuple(norm["percentiles"])
        )
        self.storage_dtype = np.dtype(attrs["storage_dtype"])
        self.input_size: tuple[int, int] = tuple(attrs["input_size"])  # type: ignore[assignment]
        self.on_mismatch = on_mismatch
        self.read_only = read_only
        self._group = group
        self._emb = group["embeddings"]
        self._markers = group["complete"]
        self.image = None
        if image is not None:
            self.bind(image)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: str | Path,
        model: Any,
        *,
        image: Any = None,
        layout: SliceLayout | None = None,
        normalization: Normalization | None = None,
        dtype: str | None = None,
        mode: Literal["r", "r+", "a"] = "a",
        on_mismatch: OnMismatch = "error",
        source: str | None = None,
    ) -> EmbeddingStore:
        """Open (``"r"`` read-only, ``"r+"`` existing, ``"a"`` create if absent) a store.

        model: the :class:`SamModel` (or its :class:`ModelSignature`) the embeddings are
        for. image: the nD image (numpy, zarr or dask; only touched slice by slice) —
        its layout defaults to :meth:`SliceLayout.for_shape`. normalization: the
        engine's intensity normalisation (default ``Normalization()``). dtype: storage
        dtype for a new store (default float16); for an existing one, None accepts the
        store's. on_mismatch: a store made with another model / precision / normalisation
        / image geometry, or a slice whose data changed, raises (``"error"``) or is
        replaced (``"overwrite"`` — only when the user asked for it: the store is emptied,
        a changed slice recomputed).
        """
        path = Path(path).expanduser()
        if on_mismatch not in ("error", "overwrite"):
            raise ValueError(f"on_mismatch must be 'error' or 'overwrite', got {on_mismatch!r}")
        if mode not in ("r", "r+", "a"):
            raise ValueError(f"mode must be 'r', 'r+' or 'a', got {mode!r}")
        sig = model if isinstance(model, ModelSignature) else ModelSignature.of(model)
        sam_model = None if isinstance(model, ModelSignature) else model
        if layout is None and image is not None:
            layout = SliceLayout.for_shape(image.shape)
        stored = read_attrs(path)
        if layout is None:
            if stored is None:
                raise ValueError("give the image or its layout to create a store")
            layout = SliceLayout.from_dict(stored["image"])
        if image is not None and tuple(image.shape) != layout.shape:
            raise ValueError(f"image shape {tuple(image.shape)} ≠ layout shape {layout.shape}")
        norm = normalization or Normalization()
        input_size = resized_shape(*layout.slice_size, int(sig.transform["image_size"]))
        wanted = build_attrs(
            sig, layout.to_dict(), norm.signature(), dtype or DEFAULT_DTYPE, input_size, source
        )
        kw = dict(sam_model=sam_model, image=image, on_mismatch=on_mismatch)
        if stored is not None:
            diff = signature_diff(stored, wanted, dtype)
            if not diff:
                group = zarr.open_group(path, mode="r" if mode == "r" else "r+")
                cls._ensure_arrays(group, stored, mode)
                return cls(path, group, stored, sig, read_only=mode == "r", **kw)
            if on_mismatch == "error" or mode != "a":
                raise StoreMismatchError(
                    f"embedding store {path} was made for something else: "
                    + "; ".join(diff)
                    + ". Use another store path, or recompute (overwrite) it."
                )
            remove_store(path)  # a napari-sam store, made for something else
        elif mode != "a":
            what = "is not a napari-sam embedding store" if path.exists() else "does not exist"
            raise FileNotFoundError(f"embedding store {path} {what}")
        elif path.exists() and not is_empty_dir(path):
            raise StoreError(
                f"{path} exists and is not a napari-sam embedding store; refusing to "
                "overwrite it: choose another store path"
            )
        with write_errors(path, "creating the store"):
            group = zarr.open_group(path, mode="a", attributes={ATTRS_KEY: wanted})
            cls._ensure_arrays(group, wanted, "a")
        return cls(path, group, wanted, sig, **kw)

    @staticmethod
    def _ensure_arrays(group: zarr.Group, attrs: dict[str, Any], mode: str) -> None:
        """Create the arrays if a creation was interrupted before them."""
        have = set(group.array_keys())
        if {"embeddings", "complete"} <= have:
            return
        if mode == "r":
            raise StoreError(f"store {group.store} is incomplete; open it writable to repair")
        lead = tuple(attrs["image"]["slice_shape"])
        ones = (1,) * len(lead)
        emb_shape = tuple(attrs["model"]["embedding_shape"])
        if "embeddings" not in have:
            group.create_array(
                "embeddings",
                shape=lead + emb_shape,
                chunks=ones + emb_shape,
                dtype=attrs["storage_dtype"],
                fill_value=0,
                compressors=None,
            )
        if "complete" not in have:
            group.create_array(
                "complete",
                shape=(*lead, MARKER_SIZE),
                chunks=(*ones, MARKER_SIZE),
                dtype="uint8",
                fill_value=0,
                compressors=None,
            )

    def bind(self, image: Any) -> None:
        """Attach the image whose slices ``get`` / ``put`` fingerprint by default."""
        if tuple(image.shape) != self.layout.shape:
            raise ValueError(
                f"image shape {tuple(image.shape)} ≠ store's image shape {self.layout.shape}"
            )
        self.image = image

    # -------------------------------------------------------------------- slices
    def _slice_data(self, index: Index, data: Any) -> np.ndarray:
        if data is None:
            if self.image is None:
                raise ValueError(
                    "the store has no image bound: pass the slice data so its fingerprint "
                    "can be checked"
                )
            return self.layout.read(self.image, index)
        data = np.asarray(data)
        if data.shape[:2] != self.layout.slice_size:
            raise ValueError(
                f"slice data of shape {data.shape} does not match the store's slice size "
                f"{self.layout.slice_size}"
            )
        return data

    def _marker(self, index: Index) -> Marker | None:
        try:
            return Marker.decode(self._markers[index])
        except Exception:  # an unreadable marker chunk is a missing slice
            return None

    def is_complete(self, index: int | Iterable[int]) -> bool:
        """True when the slice has a completion marker (its data is not checked)."""
        return self._marker(self.layout.check_index(index)) is not None

    def missing(self, indices: Iterable[Index] | None = None) -> list[Index]:
        """The indices (default: all slices) without a completion marker. Reads only the
        markers, never image data: a slice whose data changed is caught by ``get``."""
        idx = [
            self.layout.check_index(i)
            for i in (self.layout.indices() if indices is None else indices)
        ]
        if len(idx) > 8 and len(idx) * 4 >= self.layout.n_slices:
            try:
                raw = self._markers[...]
            except Exception:
                raw = None
            if raw is not None:
                return [i for i in idx if Marker.decode(raw[i]) is None]
        return [i for i in idx if self._marker(i) is None]

    def get(self, index: int | Iterable[int], data: Any = None) -> Embedding | None:
        """The slice's embedding, ready for ``Predictor.set_embedding``; None when it is
        missing, its chunk is damaged, or (``on_mismatch="overwrite"``) its data changed.

        data: the slice as numpy (H, W) / (H, W, 3|4); default: read from the bound image.
        Raises :class:`StaleSliceError` for changed data when ``on_mismatch="error"``.
        """
        idx = self.layout.check_index(index)
        marker = self._marker(idx)
        if marker is None:
            return None
        if fingerprint(self._slice_data(idx, data)) != marker.fingerprint:
            if self.on_mismatch == "error":
                raise StaleSliceError(
                    f"slice {idx} of {self.path} was computed from other image data; "
                    "recompute it (on_mismatch='overwrite')"
                )
            return None
        values = np.asarray(self._emb[idx])
        if chunk_checksum(values) != marker.checksum:
            return None
        features = torch.from_numpy(values.astype(np.float32))[None]
        return Embedding(features, self.layout.slice_size, self.input_size, self.model.weights_hash)

    def put(
        self,
        index: int | Iterable[int],
        embedding: Embedding,
        data: Any = None,
        *,
        slice_fingerprint: bytes | None = None,
    ) -> None:
        """Store a slice's embedding with the fingerprint of its data (from
        ``slice_fingerprint``, else ``data``, else the bound image)."""
        idx = self.layout.check_index(index)
        if self.read_only:
            raise StoreWriteError(f"store {self.path} was opened read-only", errno.EROFS)
        want = (1, *self.model.embedding_shape)
        if tuple(embedding.features.shape) != want:
            raise ValueError(
                f"embedding shape {tuple(embedding.features.shape)}, store needs {want}"
            )
        if embedding.model_hash != self.model.weights_hash:
            raise ValueError("embedding was computed with other model weights than the store's")
        if tuple(embedding.original_size) != self.layout.slice_size or tuple(
            embedding.input_size
        ) != tuple(self.input_size):
            raise ValueError(
                f"embedding is for a slice of {tuple(embedding.original_size)}, the store's "
                f"slices are {self.layout.slice_size}"
            )
        fp = slice_fingerprint or fingerprint(self._slice_data(idx, data))
        values = embedding.features[0].detach().to("cpu", torch.float32).numpy()
        values = values.astype(self.storage_dtype)
        if not np.isfinite(values).all():
            raise ValueError(f"embedding of slice {idx} is not finite in {self.storage_dtype}")
        marker = Marker(fp, chunk_checksum(values)).encode()
        with write_errors(self.path, f"writing slice {idx}"):
            self._markers[idx] = 0  # invalidate first: no marker ever covers a torn chunk
            self._emb[idx] = values
            self._markers[idx] = marker

    def invalidate(self, index: int | Iterable[int]) -> None:
        """Forget a slice (its marker); it counts as missing afterwards."""
        idx = self.layout.check_index(index)
        with write_errors(self.path, f"invalidating slice {idx}"):
            self._markers[idx] = 0

    def precompute(
        self,
        image: Any = None,
        indices: Iterable[Index] | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Compute the missing slices of ``indices`` (default: all) — a generator of
        :class:`~napari_sam.store.precompute.Progress` (done, total, message). See
        :func:`napari_sam.store.precompute.run` for ``scheduler``, ``spec``, ``verify``."""
        from .precompute import run

        return run(self, image, indices, **kwargs)

    def info(self) -> dict[str, Any]:
        """Summary: model, precision, image shape, slices complete / total."""
        return summarize(self.attrs, self.layout.n_slices - len(self.missing()))
