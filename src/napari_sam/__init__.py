"""napari-sam: Segment Anything for 2D/3D microscopy in napari.

Public names are imported lazily so that ``import napari_sam`` (and napari's plugin
discovery) stays cheap and does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "napari_sam.engine.loader",
    "SamModel": "napari_sam.engine.loader",
    "Predictor": "napari_sam.engine.decode.predictor",
    "PredictResult": "napari_sam.engine.decode.predictor",
    "Embedding": "napari_sam.engine.embedding",
    "Normalization": "napari_sam.engine.image",
    "to_uint8_rgb": "napari_sam.engine.image",
    "available_models": "napari_sam.weights",
    "AutomaticMaskGenerator": "napari_sam.engine.amg",
}

__all__ = [
    "AutomaticMaskGenerator",
    "Embedding",
    "Normalization",
    "PredictResult",
    "Predictor",
    "SamModel",
    "__version__",
    "available_models",
    "load_model",
    "to_uint8_rgb",
]

if TYPE_CHECKING:
    from .engine.amg import AutomaticMaskGenerator
    from .engine.decode.predictor import Predictor, PredictResult
    from .engine.embedding import Embedding
    from .engine.image import Normalization, to_uint8_rgb
    from .engine.loader import SamModel, load_model
    from .weights import available_models


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_sam' has no attribute {name!r}")
