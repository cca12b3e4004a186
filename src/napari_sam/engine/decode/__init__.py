"""Prompts → masks on one embedding: the :class:`Predictor` (interactive points / boxes /
mask inputs), the folded mask decoder used by its fast path and by automatic masks
(:mod:`.folded`), blockwise mask upsampling (:mod:`.upsample`) and prompt validation
(:mod:`.prompts`). Knows nothing of automatic masks or propagation (which use it)."""

from __future__ import annotations

from .predictor import Predictor, PredictResult

__all__ = ["PredictResult", "Predictor"]
