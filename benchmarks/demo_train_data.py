"""Training data of the demo model's stages 6 and 7: 2D images plus z-slices of 3D volumes.

    python benchmarks/demo_train_data.py OUT_DIR       # writes OUT_DIR/images, OUT_DIR/labels

Stage 6 (defaults): 700 2D pairs from ``random_synthetic_pairs(700, seed=6)`` and 10 3D volumes
(:func:`napari_sam.synthetic.nuclei_3d`) with random acquisition settings — z step 1–3
(anisotropy), radius, overlap, z / xy blur, photons, noise, uint8 / uint16 — as ``.npy``
files; ``napari-sam train --images OUT_DIR/images --labels OUT_DIR/labels`` uses every
z-slice that has a nucleus (302 slices), so the model also sees the dim, blurred end
caps of nuclei cut along z. Seeds derive from ``SeedSequence(6)``: none of the held-out
volumes (31000+, 32000+) or images (20251125, 40000+) of the benchmarks and tests.
Stage 7: ``--seed 7 --images-2d 900 --volumes 4`` (122 z-slices). See docs/demo_model.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    from napari_sam.synthetic import nuclei_3d
    from napari_sam.training.data import random_synthetic_pairs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--images-2d", type=int, default=700)
    ap.add_argument("--volumes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=6, help="data seed (2D pairs and volumes)")
    args = ap.parse_args()
    images, labels = args.out / "images", args.out / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for i, (img, lab) in enumerate(random_synthetic_pairs(args.images_2d, seed=args.seed)):
        np.save(images / f"p2d_{i:04d}.npy", img)
        np.save(labels / f"p2d_{i:04d}.npy", lab)
    rng = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(1)[0])
    slices = 0
    for i in range(args.volumes):
        z_step = rng.uniform(1.0, 3.0)
        nz = round(60 / z_step)
        r_lo = rng.uniform(6.0, 10.0)
        img, lab = nuclei_3d(
            (nz, 128, 128),
            seed=int(rng.integers(0, 2**31)),
            z_step=z_step,
            radius=(r_lo, r_lo * rng.uniform(1.5, 2.2)),
            max_overlap=rng.uniform(0.05, 0.3),
            dtype="uint8" if rng.random() < 0.5 else "uint16",
            blur=(rng.uniform(1.0, 2.5), rng.uniform(0.7, 1.5)),
            photons=float(np.exp(rng.uniform(np.log(20), np.log(200)))),
            read_noise=rng.uniform(0.5, 4.0),
        )
        np.save(images / f"v3d_{i:02d}.npy", img)
        np.save(labels / f"v3d_{i:02d}.npy", lab)
        slices += int(lab.reshape(nz, -1).any(axis=1).sum())
    print(f"{args.images_2d} 2D pairs, {args.volumes} volumes ({slices} z-slices with nuclei)")


if __name__ == "__main__":
    main()
