"""npe2 sample data: synthetic fluorescent nuclei (generated on the fly, seeded)."""

from __future__ import annotations


def nuclei_2d() -> list[tuple]:
    """A 256² uint8 image with ~25 nuclei, and its ground-truth labels."""
    from ..synthetic import nuclei_2d as make

    image, labels = make((256, 256), seed=2024)
    return [
        (image, {"name": "nuclei 2D"}, "image"),
        (labels, {"name": "nuclei 2D ground truth", "visible": False}, "labels"),
    ]


def nuclei_3d() -> list[tuple]:
    """A (24, 128, 128) uint16 stack, z step 2.5× the pixel size, and its labels."""
    from ..synthetic import nuclei_3d as make

    image, labels = make((24, 128, 128), seed=2024, z_step=2.5)
    scale = (2.5, 1.0, 1.0)
    return [
        (image, {"name": "nuclei 3D", "scale": scale}, "image"),
        (labels, {"name": "nuclei 3D ground truth", "scale": scale, "visible": False}, "labels"),
    ]
