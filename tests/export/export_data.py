"""Constants shared by the export tests (the fixtures are in conftest.py)."""

SCALE = (2.0, 0.5, 0.5)
TRANSLATE = (10.0, 100.0, -50.0)
