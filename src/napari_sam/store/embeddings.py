"""``EmbeddingStore``: per-slice SAM image embeddings in a zarr v3 group.

On disk (``STORE.zarr/``)::

    zarr.json            group; attribute "napari_sam" = signature (schema.build_attrs)
    embeddings/          (*slice_shape, C, h, w) float16|float32, one chunk per slice
    complete/            (*slice_shape, 32) uint8, one chunk per slice: the Marker
                         (fingerprint of the slice data + checksum of its chunk)

Creation is atomic and a store is never replaced without ``on_mismatch="overwrite"``
(:mod:`.creation`). Write order per slice: delete the marker, write the embedding
chunk, write the marker.
zarr's local store writes each chunk to a temporary file and renames it, so a process
killed at any moment leaves every slice either complete (chunk and marker present and
consistent) or missing; a reader never trusts a chunk without its marker, and checks the
marker's checksum of the chunk too (salted with the store's ``store_id``). A chunk that
cannot be decoded (truncated by a power cut, garbage) is a missing slice; an I/O or
permission error while reading is a :class:`StoreReadError`. Each slice has its own
chunks, so concurrent writers (Dask workers) never touch the same file; group attributes
are written once, at creation, and a writer checks before and after each slice that the
store at its path is still the one it opened.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import zarr

from ..engine.embedding import Embedding
from ..engine.image import Normalization
from ..engine.transforms import resized_shape
from .creation import Mode, open_group, resolve
from .files import (
    OVERWRITE_HINT,
    StaleSliceError,
    StoreDamagedError,
    StoreMismatchError,
    StoreReadError,
    StoreWriteError,
    read_attrs,
    read_errors,
    summarize,
    write_errors,
)
from .schema import (
    Marker,
    ModelSignature,
    build_attrs,
    chunk_checksum,
    fingerprint,
)
from .slicing import Index, SliceLayout
from .tiled_layout import TiledLayout, key_shape, layout_from_dict, region_size

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
        self.layout = layout_from_dict(attrs["image"])  # tiled: (slice..., tile) keys
        self.region_size = region_size(self.layout)
        norm = attrs["normalization"]
        cl = norm["contrast_limits"]
        self.normalization = Normalization(
            None if cl is None else tuple(cl), tuple(norm["percentiles"])
        )
        self.storage_dtype = np.dtype(attrs["storage_dtype"])
        self.input_size: tuple[int, int] = tuple(attrs["input_size"])  # type: ignore[assignment]
        self.on_mismatch = on_mismatch
        self.read_only = read_only
        self._salt = str(attrs.get("store_id", "")).encode()
        self._group = group
        self._emb = group["embeddings"]
        self._markers = group["complete"]
        self._emb_files = _ChunkFiles(path / "embeddings", self._emb, self.layout)
        self._marker_files = _ChunkFiles(path / "complete", self._markers, self.layout)
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
        layout: SliceLayout | TiledLayout | None = None,
        normalization: Normalization | None = None,
        dtype: str | None = None,
        mode: Mode = "a",
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
        / image geometry (or whose metadata is damaged), or a slice whose data changed,
        raises (``"error"``: :class:`StoreMismatchError` naming every difference,
        :class:`StoreDamagedError`, :class:`StaleSliceError`) or is replaced
        (``"overwrite"``, mode ``"a"`` only — only when the user asked for it: the store
        is emptied, a changed slice recomputed). A path that is not a napari-sam store
        is never touched.
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
        if layout is None:
            stored = read_attrs(path)
            if stored is None:
                raise ValueError("give the image or its layout to create a store")
            layout = layout_from_dict(stored["image"])
        if image is not None and tuple(image.shape) != layout.shape:
            raise ValueError(f"image shape {tuple(image.shape)} ≠ layout shape {layout.shape}")
        norm = normalization or Normalization()
        if isinstance(layout, TiledLayout):  # tiles are embedded at native resolution
            input_size = layout.region_size
        else:
            input_size = resized_shape(*layout.slice_size, int(sig.transform["image_size"]))
        wanted = build_attrs(
            sig, layout.to_dict(), norm.signature(), dtype or DEFAULT_DTYPE, input_size, source
        )
        attrs = resolve(path, wanted, mode=mode, on_mismatch=on_mismatch, dtype=dtype)
        group = open_group(path, attrs, mode)
        kw = dict(sam_model=sam_model, image=image, on_mismatch=on_mismatch)
        return cls(path, group, attrs, sig, read_only=mode == "r", **kw)

    @classmethod
    def from_attrs(cls, path: Path, attrs: dict[str, Any], model: ModelSignature) -> EmbeddingStore:
        """Read-only view of the store at ``path`` with signature ``attrs`` as read
        (:func:`~.files.store_info`: no model needed, nothing compared)."""
        return cls(path, open_group(path, attrs, "r"), attrs, model, read_only=True)

    def _check_identity(self, when: str) -> None:
        """Raise :class:`StoreMismatchError` unless the store at ``self.path`` is still
        the one this object opened (same signature and ``store_id``)."""
        try:
            now = read_attrs(self.path)
        except StoreDamagedError as err:
            now, why = None, str(err)
        else:
            why = "it is gone" if now is None else "its signature is now another"
        if now != self.attrs:
            raise StoreMismatchError(
                f"embedding store {self.path} was replaced or removed since it was opened "
                f"({why}); nothing was written {when}. Open it again."
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
        if data.shape[:2] != self.region_size:
            what = "tile region" if isinstance(self.layout, TiledLayout) else "slice"
            raise ValueError(
                f"slice data of shape {data.shape} does not match the store's {what} size "
                f"{self.region_size}"
            )
        return data

    def _read(self, array: Any, key: Any, what: str) -> np.ndarray | None:
        """``array[key]``; None when a chunk cannot be decoded (truncated, garbage: the
        slice is missing). An I/O or permission error is a StoreReadError."""
        with read_errors(self.path, f"reading {what}"):
            try:
                return np.asarray(array[key])
            except ValueError:  # zarr / numpy: the chunk's bytes do not decode
                return None

    def _marker(self, index: Index) -> Marker | None:
        if self._marker_files.damaged(index):
            return None
        raw = self._read(self._markers, index, f"the completion marker of slice {index}")
        return None if raw is None else Marker.decode(raw)

    def is_complete(self, index: int | Iterable[int]) -> bool:
        """True when the slice has a completion marker (its data is not checked)."""
        return self._marker(self.layout.check_key(index)) is not None

    def _scan(self, indices: Iterable[Index] | None) -> tuple[list[Index], list[Index]]:
        """(missing, damaged) among ``indices``: without a valid marker, or marked
        complete but with an embedding chunk of the wrong size (a power cut)."""
        idx = [
            self.layout.check_key(i)
            for i in (self.layout.region_keys() if indices is None else indices)
        ]
        ok = [i for i in idx if not self._marker_files.damaged(i)]
        raw = None
        if len(ok) > 8 and len(ok) * 4 >= self.layout.n_regions:
            raw = self._read(self._markers, (Ellipsis,), "the completion markers")
        if raw is not None:
            marked = {i for i in ok if Marker.decode(raw[i]) is not None}
        else:
            marked = {i for i in ok if self._marker(i) is not None}
        damaged = [i for i in idx if i in marked and self._emb_files.damaged(i)]
        bad = set(damaged)
        return [i for i in idx if i not in marked or i in bad], damaged

    def missing(self, indices: Iterable[Index] | None = None) -> list[Index]:
        """The indices (default: all slices) without a valid completion marker or whose
        embedding chunk is truncated. Reads only the markers (and the chunk files' sizes),
        never image data: a slice whose data changed is caught by ``get``."""
        return self._scan(indices)[0]

    def get(self, index: int | Iterable[int], data: Any = None) -> Embedding | None:
        """The slice's embedding, ready for ``Predictor.set_embedding``; None when it is
        missing, its chunk is damaged (truncated, garbage, checksum differs — also when
        the store was replaced by another one since it was opened), or
        (``on_mismatch="overwrite"``) its data changed.

        data: the slice as numpy (H, W) / (H, W, 3|4); default: read from the bound image.
        Raises :class:`StaleSliceError` for changed data when ``on_mismatch="error"``.
        """
        idx = self.layout.check_key(index)
        marker = self._marker(idx)
        if marker is None:
            return None
        if fingerprint(self._slice_data(idx, data)) != marker.fingerprint:
            if self.on_mismatch == "error":
                problem = f"slice {idx} of {self.path} was computed from other image data"
                raise StaleSliceError(
                    f"{problem}; recompute it: {OVERWRITE_HINT}", problem=problem
                )
            return None
        values = self._read(self._emb, idx, f"the embedding of slice {idx}")
        if values is None or chunk_checksum(values, self._salt) != marker.checksum:
            return None
        features = torch.from_numpy(values.astype(np.float32))[None]
        return Embedding(features, self.region_size, self.input_size, self.model.weights_hash)

    def put(
        self,
        index: int | Iterable[int],
        embedding: Embedding,
        data: Any = None,
        *,
        slice_fingerprint: bytes | None = None,
    ) -> None:
        """Store a slice's embedding with the fingerprint of its data (from
        ``slice_fingerprint``, else ``data``, else the bound image).

        Raises :class:`StoreMismatchError` (nothing trusted is written) when the store at
        this path is no longer the one that was opened (replaced or removed by another
        process): checked before and after writing."""
        idx = self.layout.check_key(index)
        if self.read_only:
            raise StoreWriteError(f"store {self.path} was opened read-only", errno.EROFS)
        want = (1, *self.model.embedding_shape)
        if tuple(embedding.features.shape) != want:
            raise ValueError(
                f"embedding shape {tuple(embedding.features.shape)}, store needs {want}"
            )
        if embedding.model_hash != self.model.weights_hash:
            raise ValueError("embedding was computed with other model weights than the store's")
        if tuple(embedding.original_size) != self.region_size or tuple(
            embedding.input_size
        ) != tuple(self.input_size):
            raise ValueError(
                f"embedding is for a slice of {tuple(embedding.original_size)} resized to "
                f"{tuple(embedding.input_size)}, the store's entries are {self.region_size} "
                f"at {tuple(self.input_size)}"
            )
        fp = slice_fingerprint or fingerprint(self._slice_data(idx, data))
        values = embedding.features[0].detach().to("cpu", torch.float32).numpy()
        values = values.astype(self.storage_dtype)
        if not np.isfinite(values).all():
            raise ValueError(f"embedding of slice {idx} is not finite in {self.storage_dtype}")
        marker = Marker(fp, chunk_checksum(values, self._salt)).encode()
        self._check_identity(f"for slice {idx}")
        with write_errors(self.path, f"writing slice {idx}"):
            self._markers[idx] = 0  # invalidate first: no marker ever covers a torn chunk
            self._emb[idx] = values
            self._markers[idx] = marker
        # replaced meanwhile: what we wrote landed in another store, whose salted
        # checksums never accept it; say so instead of reporting success
        self._check_identity(f"that another store would trust for slice {idx}")

    def invalidate(self, index: int | Iterable[int]) -> None:
        """Forget a slice (its marker); it counts as missing afterwards."""
        idx = self.layout.check_key(index)
        with write_errors(self.path, f"invalidating slice {idx}"):
            self._markers[idx] = 0

    def info(self) -> dict[str, Any]:
        """Summary: model, precision, image shape, slices complete / damaged / total
        (:func:`~.files.summarize`)."""
        missing, damaged = self._scan(None)
        return summarize(self.attrs, self.layout.n_regions - len(missing), len(damaged))


class _ChunkFiles:
    """The chunk file of each slice of one store array (local file system, raw bytes:
    every written chunk has the same size, so a truncated one shows in its size)."""

    def __init__(self, root: Path, array: zarr.Array, layout: Any) -> None:
        self.root = root
        self.meta = array.metadata
        self.tail = (0,) * (array.ndim - len(key_shape(layout)))
        codecs = getattr(self.meta, "codecs", ())
        raw = all(isinstance(c, zarr.codecs.BytesCodec) for c in codecs)
        self.size = math.prod(array.chunks) * array.dtype.itemsize if raw else None

    def damaged(self, index: Index) -> bool:
        """The slice's chunk file exists with the wrong size (absent: the fill value)."""
        if self.size is None:
            return False
        file = self.root / self.meta.encode_chunk_key((*index, *self.tail))
        try:
            return file.stat().st_size != self.size
        except FileNotFoundError:
            return False
        except OSError as err:
            raise StoreReadError(
                f"cannot read {file}: an I/O or permission problem ({err.strerror or err})"
            ) from err
