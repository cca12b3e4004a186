"""Checkpoint loading: formats accepted, and every failure gives a clear message."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import random

import pytest
import torch

from napari_sam import weights
from napari_sam.engine import loader
from napari_sam.engine.loader import load_model
from napari_sam.model import checkpoint as checkpoint_module
from napari_sam.model.build import CONFIGS, build_sam, config_name, infer_config
from napari_sam.model.checkpoint import CheckpointError, load_sam_checkpoint

from requires import require


def _state(model):
    return {k: v.clone() for k, v in model.sam.state_dict().items()}


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrapper", [None, "model_state", "state_dict", "model"])
@pytest.mark.parametrize("prefix", ["", "module.", "sam."])
def test_wrapped_and_prefixed_checkpoints_load(tmp_path, tiny_model, tiny_config, wrapper, prefix):
    sd = {prefix + k: v for k, v in _state(tiny_model).items()}
    obj = sd if wrapper is None else {wrapper: sd, "epoch": 3}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    sam, cfg = load_sam_checkpoint(path, tiny_config)
    assert cfg == tiny_config
    assert _same_weights(sam, tiny_model.sam)


def test_type_inferred_from_shapes(tmp_path, tiny_config):
    """Everything but the decoder head count is in the shapes; a bare state dict gets
    SAM's 8 decoder heads (our own checkpoints store their config)."""
    import dataclasses

    cfg8 = dataclasses.replace(tiny_config, decoder_num_heads=8)
    model = build_sam(cfg8)
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    sam, cfg = load_sam_checkpoint(path)  # no type given, no stored config
    assert cfg == cfg8
    assert _same_weights(sam, model)


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_published_types_inferred(name):
    with torch.device("meta"):
        sd = build_sam(name).state_dict()
    assert config_name(infer_config(sd)) == name


def test_stored_config_is_used(tiny_checkpoint, tiny_config):
    sam, cfg = load_sam_checkpoint(tiny_checkpoint)
    assert cfg == tiny_config
    assert sam.image_size == 64 and sam.embedding_size == (8, 8)


def test_load_model_from_checkpoint(tiny_checkpoint, tiny_model):
    m = load_model("tiny", checkpoint=tiny_checkpoint, device="cpu", precision="fp32")
    assert m.precision == "fp32" and m.device.type == "cpu" and m.name == "tiny"
    # loaded from a file: the file's SHA-256; built in memory: the state dict's
    assert m.weights_hash == "sha256:" + hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert len(tiny_model.weights_hash) == 64 and tiny_model.weights_hash != m.weights_hash
    again = load_model("tiny", checkpoint=tiny_checkpoint, device="cpu", precision="fp32")
    assert again.weights_hash == m.weights_hash


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_weights_are_hashed_once_per_load(tiny_checkpoint, monkeypatch, precision):
    """A checkpoint file is hashed once (the file); the state dict is never hashed."""
    calls = []

    def file_hash(path):
        calls.append(path)
        return real(path)

    real = loader.file_hash
    monkeypatch.setattr(loader, "file_hash", file_hash)
    monkeypatch.setattr(loader, "state_dict_hash", _never)
    m = load_model("tiny", checkpoint=tiny_checkpoint, device="cpu", precision=precision)
    assert calls == [tiny_checkpoint] and m.weights_hash.startswith("sha256:")


def test_registry_hash_is_reused_not_recomputed(tmp_path, tiny_checkpoint, monkeypatch):
    """Registry weights: the hash the download check verified is the weights hash."""
    digest = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "t.pt").write_bytes(tiny_checkpoint.read_bytes())
    info = weights.ModelInfo("t", "custom", "https://example.invalid/t.pt",
                             f"sha256:{digest.upper()}", None, "t.pt", "test")
    monkeypatch.setattr(weights, "get_model_info", lambda _name: info)
    monkeypatch.setattr(loader, "file_hash", _never)
    monkeypatch.setattr(loader, "state_dict_hash", _never)
    m = load_model("t", device="cpu", precision="fp32", cache_dir=tmp_path / "cache")
    assert m.weights_hash == f"sha256:{digest}"


def _never(*_a, **_k):
    raise AssertionError("hashed a second time")


def test_missing_unexpected_and_shape_mismatch_named(tmp_path, tiny_model, tiny_config):
    sd = _state(tiny_model)
    del sd["mask_decoder.iou_token.weight"]
    sd["mask_decoder.extra.weight"] = torch.zeros(3)
    sd["prompt_encoder.not_a_point_embed.weight"] = torch.zeros(1, 7)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_sam_checkpoint(path, tiny_config)
    msg = str(err.value)
    assert "1 missing keys: mask_decoder.iou_token.weight" in msg
    assert "1 unexpected keys: mask_decoder.extra.weight" in msg
    assert "prompt_encoder.not_a_point_embed.weight: checkpoint (1, 7) vs model (1, 32)" in msg


def test_wrong_architecture_named(tmp_path, tiny_model):
    path = tmp_path / "tiny.pth"
    torch.save(_state(tiny_model), path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_sam_checkpoint(path, "vit_b")


def test_truncated_file(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        load_sam_checkpoint(cut)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's remarks on scrambled pickles
def test_damaged_files_only_ever_give_checkpoint_errors(tmp_path, tiny_checkpoint, tiny_model):
    """Cut or scrambled at random places, a checkpoint loads (when the damage missed
    everything that matters) or fails with a CheckpointError, never another exception."""
    data = tiny_checkpoint.read_bytes()
    legacy = tmp_path / "legacy.pth"
    torch.save(_state(tiny_model), legacy, _use_new_zipfile_serialization=False)
    rng = random.Random(0)
    bad = tmp_path / "bad.pth"
    for src in (data, legacy.read_bytes()):
        for trial in range(40):
            raw = bytearray(src[: rng.randrange(len(src))] if trial % 2 else src)
            for _ in range(0 if trial % 2 else 20):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            bad.write_bytes(bytes(raw))
            try:
                load_sam_checkpoint(bad)
            except CheckpointError:
                pass


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO])
@pytest.mark.parametrize("where", ["open", "read"])
def test_unreadable_file_is_an_io_problem_not_a_bad_download(
    tiny_checkpoint, monkeypatch, code, where
):
    exc = (PermissionError if code == errno.EACCES else OSError)(code, os.strerror(code))

    def fail(*args, **kwargs):
        raise exc

    if where == "open":
        monkeypatch.setattr(checkpoint_module, "open", fail, raising=False)
    else:
        monkeypatch.setattr(torch, "load", fail)
    with pytest.raises(CheckpointError, match="I/O or permission problem") as err:
        load_sam_checkpoint(tiny_checkpoint)
    assert os.strerror(code) in str(err.value) and str(tiny_checkpoint) in str(err.value)
    assert "Download it again" not in str(err.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "all-nan"])
def test_non_finite_weights_are_refused(tmp_path, tiny_model, tiny_config, value):
    """NaN / infinite weights load silently and segment nothing: refuse them, naming
    the first bad tensor."""
    sd = _state(tiny_model)
    names = list(sd)
    first, later = names[5], names[-3]
    if value == "all-nan":
        for t in sd.values():
            t.fill_(float("nan"))
        first = names[0]
    else:
        sd[first].view(-1)[1] = value
        sd[later].view(-1)[0] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save({"config": tiny_config.to_dict(), "model": sd}, path)
    for load in (
        lambda: load_sam_checkpoint(path),
        lambda: load_model("tiny", checkpoint=path, device="cpu", precision="fp32"),
    ):
        with pytest.raises(CheckpointError, match="non-finite") as err:
            load()
        assert f"tensor {first!r}" in str(err.value) and later not in str(err.value)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are my notes, not weights\n" * 20)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_sam_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_sam_checkpoint(tmp_path / "nope.pth")


class _Evil:
    """Unpickling this would run code (create a marker file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_needing_code_execution_is_refused(tmp_path, tiny_model):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": _state(tiny_model), "payload": _Evil(str(marker))}, path)
    with pytest.raises(CheckpointError, match="need code execution"):
        load_sam_checkpoint(path)
    assert not marker.exists(), "the pickle payload ran"
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(CheckpointError):
        load_sam_checkpoint(raw)
    assert not marker.exists()


def test_non_tensor_entries_rejected(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"image_encoder.pos_embed": [1, 2, 3]}, path)
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_sam_checkpoint(path)


def test_not_sam_state_dict(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="not a SAM state dict"):
        load_sam_checkpoint(path)


def test_published_architectures_match_official_keys_and_shapes():
    """Our vit_b/l/h/t have exactly the official parameter names and shapes."""
    segment_anything = require("segment_anything")
    for name in ["vit_b", "vit_l", "vit_h"]:
        with torch.device("meta"):
            ours = build_sam(CONFIGS[name]).state_dict()
            theirs = segment_anything.sam_model_registry[name]().state_dict()
        assert {k: tuple(v.shape) for k, v in ours.items()} == {
            k: tuple(v.shape) for k, v in theirs.items()
        }, name
