"""SegmentationSession.predict (no viewer): clicks on one slice reuse one Predictor, so
the folded decoder's per-embedding context is computed once per slice, and the preview
is the best-scored candidate."""

from __future__ import annotations

import numpy as np

from napari_sam.engine.decode.folded import FoldedDecoder
from napari_sam.engine.decode.predictor import Predictor
from napari_sam.session import SegmentationSession

from tiny import make_tiny


def test_clicks_on_one_slice_compute_the_context_once(monkeypatch):
    model = make_tiny(0, precision="bf16")  # not the exact mode: folded decoder
    calls = []
    real = FoldedDecoder.context

    def counting(self, features, dense_pe):
        calls.append(features.data_ptr())
        return real(self, features, dense_pe)

    monkeypatch.setattr(FoldedDecoder, "context", counting)
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (3, 48, 40), dtype=np.uint8)
    s = SegmentationSession(model, stack, rgb=False, store_path=None)
    emb0, emb1 = s.embedding((0,)), s.embedding((1,))
    clicks = [np.array([[10.0, 12.0]]), np.array([[20.0, 5.0]]), np.array([[30.0, 30.0]])]
    for i, pts in enumerate(clicks):
        s.predict((0,), emb0, pts, np.ones(1, int), None, request=i)
    assert len(calls) == 1
    prev = s.predict((1,), emb1, clicks[0], np.ones(1, int), None, request=9)
    assert len(calls) == 2
    # the preview is the best of SAM's three candidates
    p = Predictor(model)
    p.set_embedding(emb1)
    full = p.predict(points=clicks[0], labels=[1])
    np.testing.assert_array_equal(prev.mask, full.masks[full.best])
    assert prev.score == float(full.scores[full.best])
