"""Intensity normalisation of a 2D slice to the uint8 RGB image SAM expects.

The one rule (documented in docs/usage.md):

* uint8 (H, W, 3) RGB and uint8 (H, W) grayscale are used as they are (gray replicated to
  3 channels) unless explicit ``contrast_limits`` are given — so results equal the
  official predictor on the same uint8 array.
* everything else (uint16, int, float, negative values, bool) is mapped linearly from
  [low, high] to [0, 255] and clipped, where [low, high] are the given ``contrast_limits``
  or else the ``percentiles`` (default 0.5 / 99.5) of the finite values of the slice.
  NaN and -inf become 0, +inf becomes 255. A constant slice becomes all zeros.
* RGBA drops alpha. Only (H, W) and (H, W, 3|4) are accepted; channel axes of
  multichannel stacks must be selected by the caller.

The parameters of this function are part of the embedding-cache signature
(:meth:`Normalization.signature`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalization:
    """Parameters of :func:`to_uint8_rgb`.

    contrast_limits: fixed (low, high) intensity window, or None for percentiles.
    percentiles: (low, high) percentiles of the slice's finite values, used when
    ``contrast_limits`` is None.
    """

    contrast_limits: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if self.contrast_limits is not None:
            lo, hi = self.contrast_limits
            if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
                raise ValueError(f"contrast_limits must be finite with low < high, got {(lo, hi)}")
        plo, phi = self.percentiles
        if not 0 <= plo < phi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {(plo, phi)}")

    def signature(self) -> dict[str, object]:
        """JSON-friendly description, stored with cached embeddings."""
        return {
            "rule": "napari-sam-uint8-v1",
            "contrast_limits": None if self.contrast_limits is None else list(self.contrast_limits),
            "percentiles": list(self.percentiles),
        }


def to_uint8_rgb(image: np.ndarray, norm: Normalization | None = None) -> np.ndarray:
    """(H, W) or (H, W, 3|4) array of any numeric dtype → (H, W, 3) uint8 RGB."""
    norm = norm or Normalization()
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 3)):
        raise ValueError(
            f"expected a 2D slice (H, W) or RGB (H, W, 3), got shape {img.shape}; "
            "select the slice / channel first"
        )
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"empty image of shape {img.shape}")
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise ValueError(f"unsupported image dtype {img.dtype}")
    elif img.dtype != np.uint8 or norm.contrast_limits is not None:
        img = _rescale(img, norm)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img)


def _rescale(img: np.ndarray, norm: Normalization) -> np.ndarray:
    data = img.astype(np.float32, copy=False)
    if norm.contrast_limits is not None:
        lo, hi = (float(v) for v in norm.contrast_limits)
    else:
        finite = data[np.isfinite(data)]
        if finite.size == 0:
            return np.zeros(img.shape, np.uint8)
        lo, hi = (float(v) for v in np.percentile(finite, norm.percentiles))
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    out = (data - lo) * (255.0 / (hi - lo))
    out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
