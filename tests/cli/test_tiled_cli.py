"""``napari-sam amg`` / ``propagate`` with ``--tiling`` (docs/tiling.md section 5): the
tiled engine modules on tile embeddings computed on the fly; a plane that fits the model
input gives today's result; flag errors are one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.cli import main
from napari_sam.engine.tiling import TileGrid

TINY = ["--model", "tiny", "--precision", "fp32", "--device", "cpu", "--no-progress"]
FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def amg(src, out, ckpt, *extra):
    return ["amg", str(src), "--out", str(out), "--checkpoint", str(ckpt), *TINY, *FAST, *extra]


def prop(src, seeds, out, ckpt, *extra):
    return [
        "propagate", str(src), "--labels", str(seeds), "--out", str(out),
        "--checkpoint", str(ckpt), *TINY, *extra,
    ]  # fmt: skip


def blobs(shape, seed=0):
    """(Z, H, W) uint16 image with three bright rectangles, and seeds: each drawn on
    slice 1."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 300, shape).astype(np.uint16)
    seeds = np.zeros(shape, np.uint16)
    h, w = shape[-2:]
    for k, (r, c) in enumerate([(10, 12), (h // 2 - 6, w // 2 - 6), (h - 22, w - 26)], 1):
        img[..., r : r + 12, c : c + 14] = 4000 + 500 * k
        seeds[1, r : r + 12, c : c + 14] = k
    return img, seeds


@pytest.fixture
def files(tmp_path):
    small3, seeds_small = blobs((3, 40, 48))
    big3, seeds_big = blobs((3, 100, 120), seed=1)
    for name, a in [
        ("small3", small3), ("small_seeds", seeds_small), ("big3", big3),
        ("big_seeds", seeds_big), ("small2", small3[0]), ("big2", big3[0]),
    ]:  # fmt: skip
        np.save(tmp_path / f"{name}.npy", a)
    return tmp_path


def run_ok(argv, capsys):
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


# ------------------------------------------------------ a plane that fits: today's result
@pytest.mark.parametrize("image", ["small2", "small3"])
def test_amg_on_a_plane_that_fits_is_todays_result(files, tiny_checkpoint, capsys, image):
    src = files / f"{image}.npy"
    run_ok(amg(src, files / "auto.npy", tiny_checkpoint, "--halo", "4"), capsys)
    run_ok(amg(src, files / "off.npy", tiny_checkpoint, "--tiling", "off"), capsys)
    auto, off = np.load(files / "auto.npy"), np.load(files / "off.npy")
    assert off.max() > 0
    np.testing.assert_array_equal(auto, off)


def test_propagate_on_a_plane_that_fits_is_todays_result(files, tiny_checkpoint, capsys):
    src, seeds = files / "small3.npy", files / "small_seeds.npy"
    out = run_ok(prop(src, seeds, files / "auto.npy", tiny_checkpoint), capsys)
    assert "tiles:" not in out
    run_ok(prop(src, seeds, files / "off.npy", tiny_checkpoint, "--tiling", "off"), capsys)
    np.testing.assert_array_equal(np.load(files / "auto.npy"), np.load(files / "off.npy"))


# -------------------------------------------------- tiled: the engine modules, on the fly
def test_amg_tiled_equals_the_tiled_engine_on_the_same_tiles(tmp_path, capsys):
    """Demo model (256-px input), a (2, 320, 320) stack of small nuclei: auto → tiles of
    192 + halo 32 (2 × 2); the CLI's labels are those of ``TiledVolumeAmg`` (z-linked)
    with each tile embedded at native resolution, and its 2D labels those of
    ``tiled_amg``. (The tiny random model finds no object a tile keeps.)"""
    from napari_sam.engine.amg import DEMO_PARAMS, AutomaticMaskGenerator
    from napari_sam.engine.amg.tiled import TiledVolumeAmg, tiled_amg
    from napari_sam.engine.decode import Predictor
    from napari_sam.engine.loader import load_model
    from napari_sam.engine.progress import run_to_end
    from napari_sam.synthetic import nuclei_large

    torch.set_num_threads(1)
    img = np.stack([nuclei_large((320, 320), (8, 24), seed=s)[0] for s in (21, 22)])
    np.save(tmp_path / "img3.npy", img)
    np.save(tmp_path / "img2.npy", img[0])
    flags = ["--precision", "fp32", "--device", "cpu", "--no-progress"]
    out = run_ok(["amg", str(tmp_path / "img2.npy"), "--out", str(tmp_path / "t2.npy"),
                  *flags], capsys)  # fmt: skip
    assert "tiles: 2 × 2 of 192 × 192 px + halo 32 px" in out
    run_ok(["amg", str(tmp_path / "img3.npy"), "--out", str(tmp_path / "t3.npy"), "--link-z",
            "--min-slices", "1", *flags], capsys)  # fmt: skip
    model = load_model("demo", device="cpu", precision="fp32")
    grid = TileGrid.for_model(img.shape[1:], 256)
    p = Predictor(model)
    gen = AutomaticMaskGenerator(model, **DEMO_PARAMS)

    def emb(z, t):
        return p.compute_embedding(grid.read(img[z], t), resize=False)

    expected2 = tiled_amg(gen, grid, lambda t: emb(0, t))
    assert expected2.max() > 50
    np.testing.assert_array_equal(np.load(tmp_path / "t2.npy"), expected2)
    expected3 = run_to_end(TiledVolumeAmg(gen, grid, emb, 2, link=True).run())
    np.testing.assert_array_equal(np.load(tmp_path / "t3.npy"), expected3)


def test_propagate_tiled_equals_the_tiled_engine(tmp_path, capsys):
    """Demo model, synthetic 3D nuclei (4, 320, 320) annotated on slice 2, explicit
    --tile-shape 160 160 --halo 48: the CLI's result is ``propagate_tiled``'s with the
    same tiles (tile embeddings on the fly, 2 in RAM). (The tiny random model
    propagates nothing.)"""
    from napari_sam.engine.decode import Predictor
    from napari_sam.engine.loader import load_model
    from napari_sam.engine.propagate.tiled import propagate_tiled
    from napari_sam.synthetic import nuclei_3d

    torch.set_num_threads(1)
    img, truth = nuclei_3d((4, 320, 320), seed=31_051, z_step=2.5)
    seeds = np.zeros_like(truth)
    seeds[2] = truth[2]
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "seeds.npy", seeds)
    flags = ["--tile-shape", "160", "160", "--halo", "48", "--cache-slices", "2"]
    out = run_ok(["propagate", str(tmp_path / "img.npy"), "--labels", str(tmp_path / "seeds.npy"),
                  "--out", str(tmp_path / "t.npy"), "--precision", "fp32", "--device", "cpu",
                  "--no-progress", *flags], capsys)  # fmt: skip
    assert "tiles: 2 × 2 of 160 × 160 px + halo 48 px" in out
    model = load_model("demo", device="cpu", precision="fp32")
    grid = TileGrid((320, 320), (160, 160), (48, 48))
    p = Predictor(model)
    expected = propagate_tiled(
        model, grid, lambda z, t: p.compute_embedding(grid.read(img[z], t), resize=False), seeds
    )
    assert ((expected != seeds) & (truth > 0)).sum() > 1000  # nuclei were followed
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), expected)


def test_amg_tiled_reads_one_outer_region_at_a_time(files, tiny_checkpoint, monkeypatch):
    """Tile embeddings on the fly: each read of the image is one tile's outer region
    of one slice, and at most one tile embedding is held in RAM."""
    from napari_sam.cli import io
    from napari_sam.store import provider as provider_module

    img = np.load(files / "big3.npy")
    reads, peaks = [], []

    class Recording:
        shape, dtype, ndim = img.shape, img.dtype, img.ndim

        def __getitem__(self, key):
            part = img[key]
            reads.append(part.size)
            return part

    monkeypatch.setattr(io, "read_image", lambda *a, **k: Recording())
    real = provider_module.EmbeddingProvider.get

    def get(self, key, data=None):
        emb = real(self, key, data)
        peaks.append(self.peak)
        return emb

    monkeypatch.setattr(provider_module.EmbeddingProvider, "get", get)
    assert main(amg(files / "big3.npy", files / "o.npy", tiny_checkpoint)) == 0
    assert len(reads) == 3 * 9 and max(reads) == 64 * 64
    assert max(peaks) == 1


# ----------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--tiling", "off", "--tile-shape", "40", "40"], "need tiling: drop --tiling off"),
        (["--tiling", "off", "--halo", "4"], "need tiling: drop --tiling off"),
        (["--tile-shape", "60", "60"], "exceeds the model input of 64 px"),
        (["--halo", "-1"], "--halo must be ≥ 0"),
        (["--tile-shape", "0", "40"], "--tile-shape must be two sizes ≥ 1"),
        (["--halo", "40"], "leaves no inner tile"),
        (["--workers", "0"], "--workers must be ≥ 1, got 0"),
    ],
)
def test_amg_flag_errors_are_one_line(files, tiny_checkpoint, capsys, extra, expected):
    rc = main(amg(files / "big3.npy", files / "o.npy", tiny_checkpoint, *extra))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not (files / "o.npy").exists()


def test_propagate_errors_are_one_line(files, tiny_checkpoint, capsys):
    src = files / "big3.npy"
    big = np.zeros((3, 100, 120), np.uint16)
    big[1, 10:80, 10:90] = 1  # 70 × 80 px: larger than a 64-px outer region
    np.save(files / "bigseed.npy", big)
    rc = main(prop(src, files / "bigseed.npy", files / "o.npy", tiny_checkpoint))
    err = capsys.readouterr().err
    assert rc == 2 and "larger than any tile's region" in err, err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------- demo model: small nuclei
def test_demo_amg_tiled_finds_small_nuclei_the_untiled_run_misses(tmp_path, capsys):
    """512² uint16 plane of nuclei 8–20 px (held-out seed), demo model (256-px input):
    --tiling auto (3 × 3 tiles of 192 + halo 32) F1 ≥ 0.7 (measured 0.80), --tiling off
    (the plane shrunk 2× into the input) F1 ≤ 0.1 (measured 0.02)."""
    from napari_sam.engine.metrics import object_f1
    from napari_sam.synthetic import nuclei_large

    torch.set_num_threads(1)
    img, truth = nuclei_large((512, 512), (8, 20), seed=5)
    np.save(tmp_path / "img.npy", img)
    f1 = {}
    for tiling in ("auto", "off"):
        out = tmp_path / f"{tiling}.npy"
        argv = ["amg", str(tmp_path / "img.npy"), "--out", str(out), "--tiling", tiling]
        run_ok([*argv, "--precision", "fp32", "--device", "cpu", "--no-progress"], capsys)
        tp, npred, ntrue = object_f1(np.load(out), truth)
        f1[tiling] = 2 * tp / (npred + ntrue)
    assert f1["auto"] >= 0.7 and f1["off"] <= 0.1, f1


# ------------------------------------------------------------------------ segment
def segment(src, out, ckpt, points, boxes, *extra):
    return [
        "segment", str(src), "--points", str(points), "--boxes", str(boxes), "--out",
        str(out), "--checkpoint", str(ckpt), "--model", "tiny", "--precision", "fp32",
        "--device", "cpu", *extra,
    ]  # fmt: skip


def test_segment_tiled_answers_each_prompt_on_its_tile(files, tiny_checkpoint, capsys):
    """100 × 120 slice, tiny model (64² input) → 3 × 3 tiles of 48 + halo 8: each
    object's mask is the session's tiled answer (its tile's embedding, placed at slice
    coordinates); a slice that fits gives the untiled labels; a box larger than any
    tile is one line (exit 2)."""
    import tifffile

    from napari_sam.engine.loader import load_model
    from napari_sam.session import SegmentationSession, commit_mask

    pts, boxes = files / "p.csv", files / "b.csv"
    pts.write_text("object,row,col,label\n1,16,19,1\n2,50,60,1\n2,47,40,0\n")
    boxes.write_text("object,row_min,col_min,row_max,col_max\n3,76,92,90,108\n")
    out = run_ok(segment(files / "big2.npy", files / "t", tiny_checkpoint, pts, boxes), capsys)
    assert "tiles: 3 × 3 of 48 × 48 px + halo 8 px" in out
    model = load_model("tiny", checkpoint=tiny_checkpoint, device="cpu", precision="fp32")
    img = np.load(files / "big2.npy")
    s = SegmentationSession(model, img, False, None, tiling="auto")
    expected = np.zeros(img.shape, np.uint32)
    prompts = [([[16, 19]], [1], None), ([[50, 60], [47, 40]], [1, 0], None),
               (np.zeros((0, 2)), [], [76, 92, 90, 108])]  # fmt: skip
    tiles = []
    for p, lab, box in prompts:
        preview = s.prompt((), np.array(p, float), np.array(lab, int), box, 0)
        tiles.append(preview.tile)
        commit_mask(expected, preview.mask)
    assert tiles == [(0, 0), (1, 1), (1, 2)] and expected.max() == 3
    np.testing.assert_array_equal(tifffile.imread(files / "t" / "labels.tif"), expected)
    # a slice that fits: --tiling auto = --tiling off
    pts.write_text("object,row,col,label\n1,16,19,1\n2,26,30,1\n")
    boxes.write_text("object,row_min,col_min,row_max,col_max\n3,20,20,35,40\n")
    run_ok(segment(files / "small2.npy", files / "a", tiny_checkpoint, pts, boxes), capsys)
    run_ok(segment(files / "small2.npy", files / "o", tiny_checkpoint, pts, boxes, "--tiling",
                   "off"), capsys)  # fmt: skip
    np.testing.assert_array_equal(
        tifffile.imread(files / "a" / "labels.tif"), tifffile.imread(files / "o" / "labels.tif")
    )
    boxes.write_text("object,row_min,col_min,row_max,col_max\n3,5,5,95,60\n")
    rc = main(segment(files / "big2.npy", files / "e", tiny_checkpoint, pts, boxes))
    err = capsys.readouterr().err
    assert rc == 2 and "object '3': box of 90 × 55 px" in err, err
    assert "larger than any tile's region of 64 × 64 px" in err
    assert len(err.strip().splitlines()) == 1 and not (files / "e" / "labels.tif").exists()


# ------------------------------------------------------------------- tiles in --store
def test_tiles_in_the_store_embed_info_amg_propagate(files, tiny_checkpoint, capsys):
    """``embed`` precomputes every tile (resumable), ``info`` counts tiles, ``amg`` /
    ``propagate`` with --store read them (same labels as without a store), a store made
    with other tiles is the usual mismatch (one line, kept)."""
    from napari_sam.store import store_info

    store = files / "S.zarr"
    base = ["embed", str(files / "big3.npy"), "--model", "tiny", "--checkpoint",
            str(tiny_checkpoint), "--precision", "fp32", "--device", "cpu", "--no-progress",
            "--out", str(store)]  # fmt: skip
    out = run_ok([*base, "--slices", "0:2"], capsys)
    assert "tiles: 3 × 3 of 48 × 48 px + halo 8 px" in out and "18/18 tiles complete" in out
    out = run_ok(base, capsys)  # resumes: only slice 2's tiles are computed
    assert "27/27 tiles complete" in out
    info = store_info(store)
    assert (info["tiles_complete"], info["tiles_total"]) == (27, 27)
    assert info["tiles"] == {"plane": [100, 120], "tile": [48, 48], "halo": [8, 8]}
    assert main(["info", str(store)]) == 0
    assert "27/27 tiles (9 per slice: 48 × 48 px + halo 8 px)" in capsys.readouterr().out

    def written():
        return sorted((f, f.stat().st_mtime_ns) for f in store.rglob("*") if f.is_file())

    before = written()
    run_ok(amg(files / "big3.npy", files / "a.npy", tiny_checkpoint, "--store", str(store)),
           capsys)  # fmt: skip
    run_ok(amg(files / "big3.npy", files / "b.npy", tiny_checkpoint), capsys)
    np.testing.assert_array_equal(np.load(files / "a.npy"), np.load(files / "b.npy"))
    src, seeds = files / "big3.npy", files / "big_seeds.npy"
    run_ok(prop(src, seeds, files / "p.npy", tiny_checkpoint, "--store", str(store)), capsys)
    run_ok(prop(src, seeds, files / "q.npy", tiny_checkpoint), capsys)
    np.testing.assert_array_equal(np.load(files / "p.npy"), np.load(files / "q.npy"))
    assert store_info(store)["tiles_complete"] == 27
    assert written() == before  # read, never recomputed / rewritten
    rc = main([*base, "--tile-shape", "40", "40"])
    err = capsys.readouterr().err
    assert rc == 2 and "tiling (plane, tile, halo): store has" in err, err
    assert "use --overwrite" in err and len(err.strip().splitlines()) == 1
    rc = main([*base, "--tiling", "off"])
    assert rc == 2 and "tiling" in capsys.readouterr().err
    assert store_info(store)["tiles_complete"] == 27
