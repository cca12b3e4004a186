"""The segmentation session without Qt — prompts → preview → commit decisions — shared by
the napari widget (``_napari/``) and the command line (``cli/``).

* :mod:`.session`: :class:`SegmentationSession` — one image + one model, its embeddings
  (an ``EmbeddingProvider``: RAM → zarr store → encoder) and the prompts → mask step;
* :mod:`.preview`: :class:`Preview` and telling a refinement from a new object;
* :mod:`.tiled`: which tile answers a prompt on a slice larger than the model input;
* :mod:`.commit`: which pixels a committed mask takes, the label writes long jobs plan.
"""

from __future__ import annotations

from .commit import LabelWrite, commit_mask, commit_pixels, plan_write
from .preview import Preview, is_refinement, prompt_key
from .session import SegmentationSession
from .tiled import TileError, choose_tile

__all__ = [
    "LabelWrite",
    "Preview",
    "SegmentationSession",
    "TileError",
    "choose_tile",
    "commit_mask",
    "commit_pixels",
    "is_refinement",
    "plan_write",
    "prompt_key",
]
