"""Training and fine-tuning of SAM-architecture models from images + instance labels.

May import ``engine`` and ``model``; never ``store``, ``_napari`` or ``cli``.
"""
