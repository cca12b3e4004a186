"""napari_sam.synthetic: deterministic nuclei images with instance ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sam.synthetic import make_dataset, nuclei_2d, nuclei_3d


def test_2d_is_deterministic_and_seed_dependent() -> None:
    a_img, a_lab = nuclei_2d((128, 160), seed=3)
    b_img, b_lab = nuclei_2d((128, 160), seed=3)
    c_img, _ = nuclei_2d((128, 160), seed=4)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == a_lab.shape == (128, 160)
    assert a_img.dtype == np.uint8 and a_lab.dtype == np.int32


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_dtype_and_nuclei_brighter_than_background(dtype: str) -> None:
    img, lab = nuclei_2d((128, 128), seed=1, dtype=dtype, photons=200)
    assert img.dtype == np.dtype(dtype)
    assert lab.max() >= 5
    inside = img[ndi.binary_erosion(lab > 0, iterations=2)].mean()
    outside = img[~ndi.binary_dilation(lab > 0, iterations=4)].mean()
    assert inside > 2 * outside
    if dtype == "uint16":
        assert img.max() > 255


def test_labels_are_consecutive_and_neighbours_touch() -> None:
    _, lab = nuclei_2d((256, 256), seed=0, radius=(10, 20), max_overlap=0.3)
    ids = np.unique(lab[lab > 0])
    assert np.array_equal(ids, np.arange(1, ids.max() + 1))
    # some pairs of nuclei share a border (touching / overlapping neighbours)
    grown = ndi.grey_dilation(lab, size=3)
    assert np.count_nonzero((grown != lab) & (lab > 0) & (grown > 0)) > 0


def test_3d_anisotropic() -> None:
    vol, lab = nuclei_3d((16, 64, 64), seed=2, z_step=3.0, radius=(8, 10))
    assert vol.shape == lab.shape == (16, 64, 64)
    assert vol.dtype == np.uint16
    assert lab.max() >= 1
    # nuclei are round in physical units: extent in z (slices) ≈ xy extent / z_step
    sl = ndi.find_objects(lab)[0]
    z_ext = sl[0].stop - sl[0].start
    xy_ext = max(sl[1].stop - sl[1].start, sl[2].stop - sl[2].start)
    assert z_ext < xy_ext


def test_make_dataset_seeds() -> None:
    a = make_dataset(3, seed=5, shape=(64, 64))
    b = make_dataset(3, seed=5, shape=(64, 64))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][0], a[1][0])
    vols = make_dataset(2, seed=5, shape=(8, 48, 48))
    assert vols[0][0].ndim == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dtype"):
        nuclei_2d((32, 32), dtype="float32")
    with pytest.raises(ValueError, match="radius"):
        nuclei_2d((32, 32), radius=(5, 2))


def _digest(*arrays: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def test_existing_generators_unchanged() -> None:
    """The demo model, the README sample and many tests depend on these exact arrays."""
    assert _digest(*nuclei_2d((256, 256), seed=2024)) == "a966c8e099e3be40"
    img_lab = nuclei_2d((96, 80), seed=7, dtype="uint16", radius=(5, 9))
    assert _digest(*img_lab) == "40f457b4c36d6ef2"
    assert _digest(*nuclei_3d((8, 48, 48), seed=3)) == "6feb2602fbec62d8"


def test_varied_is_deterministic_and_every_variant_renders() -> None:
    from napari_sam.synthetic import VARIANTS, nuclei_2d_varied

    a = nuclei_2d_varied((96, 128), seed=5, edge=2.0, touching=0.5, gradient=0.3)
    b = nuclei_2d_varied((96, 128), seed=5, edge=2.0, touching=0.5, gradient=0.3)
    c = nuclei_2d_varied((96, 128), seed=6, edge=2.0, touching=0.5, gradient=0.3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == a[1].shape == (96, 128) and a[1].dtype == np.int32
    for name, kw in VARIANTS.items():
        img, lab = nuclei_2d_varied((256, 256), seed=1, **kw)
        ids = np.unique(lab[lab > 0])
        assert len(ids) >= 8 and np.array_equal(ids, np.arange(1, len(ids) + 1)), name
        assert img.dtype == np.dtype(kw.get("dtype", "uint8"))
    img, _ = nuclei_2d_varied((128, 128), seed=1, **VARIANTS["uint16-poisson"])
    assert img.max() > 255


def _outside_band(lab: np.ndarray, width: int) -> np.ndarray:
    return ndi.binary_dilation(lab > 0, iterations=width) & (lab == 0)


def test_varied_edges_shapes_contacts_and_background() -> None:
    from napari_sam.synthetic import nuclei_2d_varied

    clean = dict(photons=300.0, read_noise=0.0, blur=0.3, dtype="uint16")  # no saturation
    ratios = {}
    for edge in (0.0, 3.0):  # intensity just outside the label, relative to inside
        img, lab = nuclei_2d_varied((128, 128), seed=2, edge=edge, **clean)
        far = ~ndi.binary_dilation(lab > 0, iterations=10)
        bg = np.median(img[far])
        inside = np.median(img[ndi.binary_erosion(lab > 0, iterations=3)]) - bg
        ratios[edge] = (np.median(img[_outside_band(lab, 2)]) - bg) / inside
    assert ratios[0.0] < 0.05 and ratios[3.0] > 0.12  # measured: 0.011 and 0.21
    # elongation: major / minor axis from second moments
    _, lab = nuclei_2d_varied((192, 192), seed=3, elongation=(2.0, 2.5), max_overlap=0.0)
    axis_ratio = []
    for i in range(1, lab.max() + 1):
        rc = np.argwhere(lab == i)
        if len(rc) > 30 and not (rc.min(0) == 0).any() and not (rc.max(0) == 191).any():
            ev = np.linalg.eigvalsh(np.cov(rc.T))
            axis_ratio.append(np.sqrt(ev[1] / ev[0]))
    assert len(axis_ratio) >= 5 and np.median(axis_ratio) > 1.8

    def touching_fraction(touching: float) -> float:
        _, lab = nuclei_2d_varied((192, 192), seed=4, touching=touching)
        grown = ndi.grey_dilation(lab, size=3)
        hit = np.unique(lab[(grown != lab) & (lab > 0) & (grown > 0)])
        return len(hit) / lab.max()

    assert touching_fraction(0.9) > 2 * touching_fraction(0.0)
    # gradient: background differs strongly from one side to the other
    spread = {}
    for g in (0.0, 1.0):
        img, lab = nuclei_2d_varied((128, 128), seed=5, gradient=g, **clean)
        bg = img[~ndi.binary_dilation(lab > 0, iterations=6)].astype(float)
        spread[g] = np.percentile(bg, 95) - np.percentile(bg, 5)
    assert spread[1.0] > 3 * spread[0.0]


def test_varied_bad_arguments() -> None:
    from napari_sam.synthetic import nuclei_2d_varied

    for kw, match in [
        (dict(dtype="float32"), "dtype"),
        (dict(radius=(5, 2)), "radius"),
        (dict(elongation=(0.5, 2)), "elongation"),
        (dict(edge=-1.0), "edge"),
        (dict(touching=1.5), "touching"),
    ]:
        with pytest.raises(ValueError, match=match):
            nuclei_2d_varied((32, 32), **kw)


# ----------------------------------------------------------------- large planes


def test_large_plane_regions_blocks_and_out_agree() -> None:
    """nuclei_large renders 512-px blocks: the whole plane, any region of it and a
    block-by-block write into an array-like are the same pixels; nuclei across block
    borders are one connected object each; seeded."""
    from napari_sam.synthetic import nuclei_large
    from napari_sam.synthetic_large import LargeNuclei

    shape = (700, 1100)  # 2 × 3 blocks, the last ones partial
    img, lab = nuclei_large(shape, (8, 40), seed=5)
    assert img.shape == lab.shape == shape and img.dtype == np.uint16
    assert lab.dtype == np.int32
    again = nuclei_large(shape, (8, 40), seed=5)
    assert np.array_equal(img, again[0]) and np.array_equal(lab, again[1])
    assert not np.array_equal(img, nuclei_large(shape, (8, 40), seed=6)[0])
    region = LargeNuclei(shape, (8, 40), 5).region(300, 400, 650, 1030)
    assert np.array_equal(region[0], img[300:650, 400:1030])
    assert np.array_equal(region[1], lab[300:650, 400:1030])
    out = (np.zeros(shape, np.uint16), np.zeros(shape, np.int32))
    assert nuclei_large(shape, (8, 40), seed=5, out=out) is out
    assert np.array_equal(out[0], img) and np.array_equal(out[1], lab)
    ids = np.unique(lab[lab > 0])
    assert np.array_equal(ids, np.arange(1, ids.max() + 1)) and len(ids) > 200
    across = set(lab[511][(lab[511] == lab[512]) & (lab[512] > 0)].tolist())
    across |= set(lab[:, 511][(lab[:, 511] == lab[:, 512]) & (lab[:, 512] > 0)].tolist())
    assert len(across) >= 3
    for k in across:  # one connected object with the same id on both sides
        assert ndi.label(lab == k)[1] == 1
    # equivalent diameters within the range (nuclei cut by the plane's edge excepted)
    inner = lab[40:-40, 40:-40]
    edge = np.unique(
        np.concatenate(
            [lab[:40].ravel(), lab[-40:].ravel(), lab[:, :40].ravel(), lab[:, -40:].ravel()]
        )
    )
    area = np.bincount(lab.ravel())
    whole = np.setdiff1d(np.unique(inner[inner > 0]), edge)
    d = 2 * np.sqrt(area[whole] / np.pi)
    assert d.min() >= 8 * 0.8 and d.max() <= 40 * 1.1
    # nuclei brighter than the background
    assert img[ndi.binary_erosion(lab > 0, iterations=2)].mean() > 1.5 * img[lab == 0].mean()


def test_large_plane_fixed_nuclei_dtype_and_bad_arguments() -> None:
    from napari_sam.synthetic import nuclei_large

    fixed = [(256, 511.5, 30), (100, 100, 12)]
    img, lab = nuclei_large((512, 1024), (8, 20), seed=1, dtype="uint8", fixed=fixed)
    assert img.dtype == np.uint8
    for r, c, d in fixed:
        k = lab[int(r), int(c)]
        assert k > 0 and abs((lab == k).sum() - np.pi * d * d / 4) < 0.15 * np.pi * d * d / 4
    with pytest.raises(ValueError, match="dtype"):
        nuclei_large((64, 64), dtype="float32")
    with pytest.raises(ValueError, match="diameter_range"):
        nuclei_large((64, 64), (30, 10))
    with pytest.raises(ValueError, match="cover"):
        nuclei_large((64, 64), cover=1.5)
