"""The segmentation session without Qt — prompts → preview → commit decisions — shared by
the napari widget (``_napari/``) and the command line (``cli/``).

* :mod:`.session`: :class:`SegmentationSession` — one image + one model, its embeddings
  (an ``EmbeddingProvider``: RAM → zarr store → encoder) and the prompts → mask step;
* :mod:`.preview`: :class:`Preview` and telling a refinement from a new object;
* :mod:`.commit`: which pixels a committed mask takes, the label writes long jobs plan.
"""

from __future__ import annotations

from .commit import LabelWrite, commit_mask, commit_pixels, plan_write
from .preview import Preview, is_refinement, prompt_key
from .session import SegmentationSession

__all__ = [
    "LabelWrite",
    "Preview",
    "SegmentationSession",
    "commit_mask",
    "commit_pixels",
    "is_refinement",
    "plan_write",
    "prompt_key",
]
