"""Tile region keys in the embedding provider (store/tiled_layout.py): keys
(slice..., tile_row, tile_col), reads of one outer region, native-resolution embeddings,
and tiles as store entries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.engine.decode import Predictor
from napari_sam.engine.tiling import TileGrid
from napari_sam.store import EmbeddingProvider, SliceLayout, TiledLayout


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, (2, 100, 120)).astype(np.uint16)


def test_keys_reads_and_errors(image):
    grid = TileGrid((100, 120), (48, 48), (8, 8))
    layout = TiledLayout(SliceLayout.for_shape(image.shape), grid)
    keys = list(layout.region_keys())
    assert layout.n_regions == len(keys) == 2 * 9 and keys[0] == (0, 0, 0) and keys[-1] == (1, 2, 2)
    assert layout.tile_key((1,), (2, 1)) == (1, 2, 1) and layout.split((1, 2, 1)) == ((1,), (2, 1))
    r0, c0, r1, c1 = grid.outer((2, 1))
    np.testing.assert_array_equal(layout.read(image, (1, 2, 1)), image[1, r0:r1, c0:c1])
    with pytest.raises(IndexError, match="needs 3"):
        layout.check_key((1,))
    with pytest.raises(IndexError, match="out of range"):
        layout.check_key((0, 3, 0))
    with pytest.raises(ValueError, match="plane"):
        TiledLayout(SliceLayout.for_shape(image.shape), TileGrid((90, 120), (48, 48), (8, 8)))
    # spatial axes given in another order: (W, H) planes, read transposed like SliceLayout
    swapped = TiledLayout(
        SliceLayout.for_shape(image.shape, spatial=(2, 1)), TileGrid((120, 100), (48, 48), (8, 8))
    )
    r0, c0, r1, c1 = swapped.grid.outer((1, 0))
    np.testing.assert_array_equal(swapped.read(image, (0, 1, 0)), image[0].T[r0:r1, c0:c1])


def test_provider_embeds_tiles_at_native_resolution_in_ram(image, tiny_model):
    grid = TileGrid((100, 120), (48, 48), (8, 8))
    layout = TiledLayout(SliceLayout.for_shape(image.shape), grid)
    provider = EmbeddingProvider(tiny_model, image, layout, capacity=2)
    emb = provider.get((1, 0, 2))
    expected = Predictor(tiny_model).compute_embedding(grid.read(image[1], (0, 2)), resize=False)
    assert tuple(emb.original_size) == tuple(emb.input_size) == (64, 64)
    torch.testing.assert_close(emb.features, expected.features, rtol=0, atol=0)
    batched = list(provider.precompute([(0, 0, 0), (0, 0, 1), (0, 1, 0)]))
    assert batched[-1][:2] == (3, 3) and provider.peak == 2


# ------------------------------------------------------------------ tiles in the store
def test_tiles_are_store_entries_validated_like_slices(image, tiny_model, tmp_path):
    """A store of a tiled layout: arrays (Z, rows, cols, C, h, w), one chunk and one
    marker per tile; an entry is served only for the same tile pixels (halo included);
    the grid is part of the signature; info counts tiles."""
    import zarr

    from napari_sam.store import EmbeddingStore, StaleSliceError, StoreMismatchError, store_info

    grid = TileGrid((100, 120), (48, 48), (8, 8))
    layout = TiledLayout(SliceLayout.for_shape(image.shape), grid)
    path = tmp_path / "t.zarr"
    provider = EmbeddingProvider(tiny_model, image, layout, store=path, capacity=1)
    emb = provider.get((1, 2, 0))
    assert provider.computed == 1 and provider.store.missing() == [
        k for k in layout.region_keys() if k != (1, 2, 0)
    ]
    arrays = zarr.open_group(path, mode="r")
    assert arrays["embeddings"].shape[:3] == (2, 3, 3) and arrays["complete"].shape == (2, 3, 3, 32)
    assert arrays["embeddings"].chunks[:3] == (1, 1, 1)
    # a fresh provider reads it back (float16 storage), never recomputes
    again = EmbeddingProvider(tiny_model, image, layout, store=path)
    back = again.get((1, 2, 0))
    assert again.computed == 0 and tuple(back.original_size) == tuple(back.input_size) == (64, 64)
    torch.testing.assert_close(back.features, emb.features, atol=2e-2, rtol=1e-2)
    # a pixel in the tile's halo changed: that tile is stale, its neighbours are not
    r0, c0, _, _ = grid.outer((2, 0))
    changed = image.copy()
    changed[1, r0, c0] += 1  # the outer region's corner: tile (2, 0)'s halo
    assert changed[1, r0, c0] != image[1, r0, c0]
    with pytest.raises(StaleSliceError, match=r"slice \(1, 2, 0\)"):
        EmbeddingProvider(tiny_model, changed, layout, store=path).get((1, 2, 0))
    # another tiling: the usual mismatch, naming it; the store is kept
    other = TiledLayout(SliceLayout.for_shape(image.shape), TileGrid((100, 120), (40, 40), (8, 8)))
    with pytest.raises(StoreMismatchError, match="tiling"):
        EmbeddingStore.open(path, tiny_model, image=image, layout=other)
    with pytest.raises(StoreMismatchError, match="tiling"):
        EmbeddingStore.open(path, tiny_model, image=image)  # untiled
    info = store_info(path)
    assert (info["tiles_complete"], info["tiles_total"]) == (1, 18)
    assert info["tiles"] == grid.to_dict()
    list(EmbeddingProvider(tiny_model, image, layout, store=path).precompute())
    assert store_info(path)["tiles_complete"] == 18
