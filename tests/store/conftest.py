"""Fixtures for the store tests: a tiny random-weight SAM (milliseconds per slice on
CPU), also saved as a checkpoint so subprocesses and Dask workers load the same model."""

from __future__ import annotations

import pytest
import torch

from napari_sam.engine.loader import SamModel, load_model
from napari_sam.store import ModelSpec

from store_helpers import TINY, make_tiny


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are dominated by thread start-up on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"config": TINY.to_dict(), "model": make_tiny(0).sam.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="session")
def model(checkpoint) -> SamModel:
    """The tiny model loaded from ``checkpoint``: the same weights (and weights hash, the
    file's) as the models subprocesses and Dask workers load from it."""
    return load_model("tiny", checkpoint=checkpoint, device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def spec(checkpoint) -> ModelSpec:
    return ModelSpec("tiny", checkpoint, device="cpu", precision="fp32")
