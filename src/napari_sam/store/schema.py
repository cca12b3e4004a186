"""What an embedding store records: the group signature, slice fingerprints and the
per-slice completion marker.

The signature (group attribute ``"napari_sam"``) says which model, precision,
normalisation and geometry produced the embeddings; a store whose signature differs
from the caller's is never used silently (:func:`signature_diff`). Each slice also
carries a fingerprint of its own data (:func:`fingerprint`, computed only when the slice
is touched) inside its completion marker (:class:`Marker`).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

# 2: "store_id" (identity of one created store; salts the marker's chunk checksum)
# 3: model.weights_hash of a model loaded from a file is the file's hash ("alg:hex"),
#    no longer the state dict's: older stores are refused as a mismatch (never deleted)
SCHEMA_VERSION = 3
ATTRS_KEY = "napari_sam"
KIND = "embeddings"
FINGERPRINT_ALGORITHM = "xxh3_128(dtype|shape|C-order bytes of the slice)"
STORAGE_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class ModelSignature:
    """The part of the store signature that comes from the model.

    ``weights_hash`` identifies the weights (the checkpoint); ``precision`` is the
    concrete encoder precision (``"fp32"`` / ``"bf16"``: bf16 embeddings are not served to
    an fp32 user); ``config`` is the architecture; ``transform`` the resize / pixel
    normalisation the engine applies before the encoder. ``embedding_shape`` is (C, h, w).
    ``plan`` is the creating model's decode plan (:meth:`~napari_sam.engine.plan.DecodePlan
    .to_dict`: CPU class, attention, …) — recorded for the user, never compared (a store
    filled on one machine serves another with the same weights and precision).
    """

    name: str
    weights_hash: str
    precision: str
    config: Mapping[str, Any]
    transform: Mapping[str, Any]
    embedding_shape: tuple[int, int, int]
    plan: Mapping[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def of(cls, model: Any) -> ModelSignature:
        """Signature of a loaded :class:`~napari_sam.engine.loader.SamModel`."""
        sam = model.sam
        grid = tuple(int(v) for v in sam.embedding_size)
        transform = {
            "resize": "longest-side, PIL bilinear, rounded half up",
            "pad": "zero, bottom/right",
            "image_size": int(sam.image_size),
            "pixel_mean": [float(v) for v in sam.pixel_mean.flatten().tolist()],
            "pixel_std": [float(v) for v in sam.pixel_std.flatten().tolist()],
        }
        return cls(
            name=str(model.name),
            weights_hash=str(model.weights_hash),
            precision=str(model.precision),
            config=_plain(model.config.to_dict()),
            transform=transform,
            embedding_shape=(int(model.config.prompt_embed_dim), *grid),
            plan=_plain(model.plan.to_dict()) if getattr(model, "plan", None) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights_hash": self.weights_hash,
            "precision": self.precision,
            "config": _plain(self.config),
            "transform": _plain(self.transform),
            "embedding_shape": list(self.embedding_shape),
            "plan": _plain(self.plan),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSignature:
        return cls(
            name=d["name"],
            weights_hash=d["weights_hash"],
            precision=d["precision"],
            config=dict(d["config"]),
            transform=dict(d["transform"]),
            embedding_shape=tuple(int(v) for v in d["embedding_shape"]),  # type: ignore[arg-type]
            plan=d.get("plan"),
        )


def _plain(obj: Any) -> Any:
    """JSON round-trip form (tuples → lists), so stored and fresh values compare equal."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def build_attrs(
    model: ModelSignature,
    layout: Mapping[str, Any],
    normalization: Mapping[str, Any],
    storage_dtype: str,
    input_size: tuple[int, int],
    source: str | None = None,
) -> dict[str, Any]:
    """The group attribute value written once when a store is created."""
    from .. import __version__

    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "model": model.to_dict(),
        "normalization": _plain(normalization),
        "image": _plain(layout),
        "input_size": list(input_size),
        "storage_dtype": storage_dtype,
        "fingerprint": FINGERPRINT_ALGORITHM,
        "source": source,
        "writer": f"napari-sam {__version__}",
    }


# (path in attrs, what to call it) — fields that must match for a store to be used.
_COMPARED = (
    (("schema_version",), "schema version"),
    (("model", "weights_hash"), "model weights (checkpoint)"),
    (("model", "precision"), "encoder precision"),
    (("model", "config"), "model architecture"),
    (("model", "transform"), "engine transform"),
    (("normalization",), "intensity normalisation"),
    (("image", "shape"), "image shape"),
    (("image", "spatial_axes"), "spatial axes"),
    (("image", "rgb"), "rgb"),
    (("image", "channel_axis"), "channel axis"),
    (("image", "channel"), "channel"),
    (("input_size",), "model input size"),
    (("image", "tiles"), "tiling (plane, tile, halo)"),
)


def _get(d: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return "<missing>"
        d = d[key]
    return d


def _short(v: Any) -> str:
    """A value for a message; hex digests (``"alg:"`` prefixed or not) cut to 12 digits."""
    s = str(v)
    if isinstance(v, str) and re.fullmatch(r"([a-z0-9]+:)?[0-9a-f]{32,}", s):
        alg, _, digest = s.rpartition(":")
        return f"{alg}:{digest[:12]}" if alg else digest[:12]
    return s if len(s) <= 60 else s[:57] + "…"


def signature_diff(
    stored: Mapping[str, Any], wanted: Mapping[str, Any], storage_dtype: str | None = None
) -> list[str]:
    """Human-readable differences that forbid using ``stored`` for ``wanted``.

    ``storage_dtype``: the dtype the caller insists on, or None to accept the store's.
    """
    out = []
    for path, label in _COMPARED:
        a, b = _get(stored, path), _get(wanted, path)
        if a != b:
            if path == ("model", "weights_hash"):
                a = f"{_short(a)} ({_get(stored, ('model', 'name'))})"
                b = f"{_short(b)} ({_get(wanted, ('model', 'name'))})"
            out.append(f"{label}: store has {_short(a)}, needed {_short(b)}")
    if storage_dtype is not None and stored.get("storage_dtype") != storage_dtype:
        out.append(
            f"storage dtype: store has {stored.get('storage_dtype')}, needed {storage_dtype}"
        )
    return out


_ABSENT = object()


def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _int_list(n: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and len(v) == n and all(_is_int(x, 1) for x in v)


# (path in attrs, check) — the fields a reader relies on, with their types.
_TYPED: tuple[tuple[tuple[str, ...], Callable[[Any], bool]], ...] = (
    (("schema_version",), _is_int),
    (("model",), lambda v: isinstance(v, dict)),
    (("model", "name"), lambda v: isinstance(v, str)),
    (("model", "weights_hash"), lambda v: isinstance(v, str)),
    (("model", "precision"), lambda v: isinstance(v, str)),
    (("model", "config"), lambda v: isinstance(v, dict)),
    (("model", "transform"), lambda v: isinstance(v, dict)),
    (("model", "transform", "image_size"), lambda v: _is_int(v, 1)),
    (("model", "embedding_shape"), _int_list(3)),
    (("normalization",), lambda v: isinstance(v, dict)),
    (("image",), lambda v: isinstance(v, dict)),
    (("input_size",), _int_list(2)),
    (("storage_dtype",), lambda v: v in STORAGE_DTYPES),
)
_STORE_ID = re.compile(r"[0-9a-f]{32}")


def attrs_problem(attrs: Any) -> str | None:
    """Why the stored signature ``attrs`` is unusable (a damaged or hand-edited
    ``zarr.json``), or None when every field a reader uses has the right type."""
    if not isinstance(attrs, dict):
        return f"the signature is a {type(attrs).__name__}, not a mapping"
    for path, ok in _TYPED:
        value: Any = attrs
        for key in path:
            value = value.get(key, _ABSENT) if isinstance(value, dict) else _ABSENT
        if value is _ABSENT:
            return f"field {'.'.join(path)!r} is missing"
        if not ok(value):
            return f"field {'.'.join(path)!r} has an invalid value {_short(value)!r}"
    if attrs["schema_version"] >= 2 and not (
        isinstance(attrs.get("store_id"), str) and _STORE_ID.fullmatch(attrs["store_id"])
    ):
        return f"field 'store_id' has an invalid value {_short(attrs.get('store_id'))!r}"
    from ..engine.image import Normalization
    from .tiled_layout import layout_from_dict

    try:
        layout_from_dict(attrs["image"])
        norm = attrs["normalization"]
        cl = norm["contrast_limits"]
        Normalization(None if cl is None else (cl[0], cl[1]), tuple(norm["percentiles"]))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return f"the image layout or normalisation is invalid ({type(err).__name__}: {err})"
    return None


def fingerprint(data: np.ndarray) -> bytes:
    """16-byte fingerprint of one slice (after channel selection): its dtype, shape and
    C-order bytes. Cost: one pass over the slice (xxh3, several GB/s)."""
    arr = np.ascontiguousarray(data)
    h = xxhash.xxh3_128()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(memoryview(arr).cast("B") if arr.size else b"")
    return h.digest()


def chunk_checksum(values: np.ndarray, salt: bytes = b"") -> bytes:
    """8-byte checksum of an embedding chunk as stored (storage dtype, C order).

    salt: the store's identity (``store_id``), so that a marker written into one store
    never validates a chunk in another store that replaced it at the same path."""
    h = xxhash.xxh3_64(salt)
    h.update(memoryview(np.ascontiguousarray(values)).cast("B"))
    return h.digest()


MARKER_SIZE = 32
_MAGIC = b"NSC1"


@dataclass(frozen=True)
class Marker:
    """Per-slice completion record: 32 bytes, one zarr chunk per slice.

    Layout: ``b"NSC1"`` | 16-byte slice fingerprint | 8-byte checksum of the embedding
    chunk | CRC32 of the previous 28 bytes. All zeros (the fill value, i.e. no chunk on
    disk) means "not computed".
    """

    fingerprint: bytes
    checksum: bytes

    def encode(self) -> np.ndarray:
        body = _MAGIC + self.fingerprint + self.checksum
        raw = body + struct.pack("<I", zlib.crc32(body))
        return np.frombuffer(raw, dtype=np.uint8).copy()

    @classmethod
    def decode(cls, raw: np.ndarray) -> Marker | None:
        """The marker in ``raw`` (32 uint8), or None when absent, torn or foreign."""
        b = np.asarray(raw, dtype=np.uint8).tobytes()
        if len(b) != MARKER_SIZE or b[:4] != _MAGIC:
            return None
        if struct.unpack("<I", b[28:])[0] != zlib.crc32(b[:28]):
            return None
        return cls(fingerprint=b[4:20], checksum=b[20:28])
