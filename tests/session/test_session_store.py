"""SegmentationSession and its embedding store (no viewer): a store made for something
else raises by default (the widget asks the user); a stored slice whose image data
changed is neither used nor replaced unless the user asked for "overwrite"."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.session import SegmentationSession
from napari_sam.store import EmbeddingStore, StoreMismatchError

from tiny import make_tiny


def stack(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (3, 40, 48), dtype=np.uint8)


def test_store_of_another_model_raises_unless_overwrite(tmp_path):
    path = tmp_path / "emb.zarr"
    first = SegmentationSession(make_tiny(0), stack(0), rgb=False, store_path=path)
    first.embedding((1,))
    with pytest.raises(StoreMismatchError, match="made for something else"):
        SegmentationSession(make_tiny(1), stack(0), rgb=False, store_path=path)
    assert first.store.missing([(1,)]) == []  # still there
    replaced = SegmentationSession(
        make_tiny(1), stack(0), rgb=False, store_path=path, on_mismatch="overwrite"
    )
    assert replaced.store.missing([(1,)]) == [(1,)]


def test_changed_slice_is_encoded_into_ram_only(tmp_path):
    path = tmp_path / "emb.zarr"
    model = make_tiny(0)
    old = SegmentationSession(model, stack(0), rgb=False, store_path=path)
    stored = old.embedding((1,))
    changed = stack(0)
    changed[1] = 255 - changed[1]
    s = SegmentationSession(model, changed, rgb=False, store_path=path)
    emb = s.embedding((1,))
    assert not np.allclose(emb.features.numpy(), stored.features.numpy(), atol=1e-2)
    # the store still holds the old slice's embedding (nothing replaced silently)
    kept = EmbeddingStore.open(path, model, image=stack(0), mode="r").get((1,))
    np.testing.assert_allclose(kept.features.numpy(), stored.features.numpy(), atol=1e-2)
    assert s.stale == {(1,)}
    assert s.embedding((0,)) is not None and s.stale == {(1,)}  # unchanged slices: fine
