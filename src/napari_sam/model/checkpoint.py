"""Safe checkpoint loading: ``weights_only=True``, CPU first, strict keys, finite
values, clear errors."""

from __future__ import annotations

import errno
import os
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .build import SamConfig, build_sam, infer_config
from .sam import Sam

WRAPPER_KEYS = ("model_state", "state_dict", "model")
STRIP_PREFIXES = ("module.", "sam.")
_MAX_LISTED = 8
# What torch.load raises for a truncated or garbage file (it has no error type of its own;
# a garbage offset makes it seek to an invalid position: OSError EINVAL).
_DECODE_ERRORS = (
    RuntimeError, EOFError, ValueError, LookupError, TypeError, AttributeError,
    AssertionError, struct.error,
)


class CheckpointError(ValueError):
    """The file cannot be used as a SAM checkpoint; the message says why."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` on the CPU, turning failures into
    :class:`CheckpointError` messages that name the file and the problem: unreadable (an
    I/O or permission problem), code-executing pickle, or truncated / not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise _io_error(path, err) from None
    with handle:
        try:
            obj = torch.load(handle, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            text = str(err)
            if "Unsupported global" in text or "GLOBAL" in text:
                raise CheckpointError(
                    f"{path} contains Python objects that need code execution to load; "
                    "napari-sam only loads plain tensors (torch.load weights_only=True). "
                    "Re-save it with torch.save(model.state_dict(), path)."
                ) from None
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint (its contents are not a readable "
                "torch.save file)"
            ) from None
        except OSError as err:
            if err.errno not in (None, errno.EINVAL):
                raise _io_error(path, err) from None
            raise _damaged(path, err) from None
        except _DECODE_ERRORS as err:
            raise _damaged(path, err) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def _io_error(path: Path, err: OSError) -> CheckpointError:
    return CheckpointError(
        f"cannot read {path}: an I/O or permission problem ({err.strerror or err}), not a "
        "damaged file; check the file's permissions and the disk"
    )


def _damaged(path: Path, err: BaseException) -> CheckpointError:
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return CheckpointError(
        f"{path} is truncated or not a PyTorch checkpoint "
        f"(size {path.stat().st_size} bytes; {first}). Download it again."
    )


def check_finite(sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming the first tensor (in state-dict order) that
    holds NaN or infinite values: such weights load but segment nothing. One pass."""
    for name, t in sd.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"{source}: tensor {name!r} holds {bad} non-finite (NaN or infinite) values "
                f"of {t.numel()}; the weights are damaged (e.g. a diverged training run): "
                "use another checkpoint"
            )


def extract_state_dict(
    obj: Mapping[str, Any], source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Unwrap ``model_state`` / ``state_dict`` / ``model`` and strip ``module.`` / ``sam.``.

    Returns the state dict and the ``config`` dict stored beside it (napari-sam's own
    checkpoints carry one), or None.
    """
    config = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
    sd: Mapping[str, Any] = obj
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            sd = inner
            break
    out: dict[str, torch.Tensor] = {}
    for name, value in sd.items():
        for prefix in STRIP_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: entry {name!r} is a {type(value).__name__}, not a tensor"
            )
        out[name] = value
    if not out:
        raise CheckpointError(f"{source} holds no tensors")
    return out, dict(config) if config is not None else None


def check_state_dict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict comparison of names and shapes; raises :class:`CheckpointError` listing
    missing keys, unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(sd) & set(expected))
        if sd[k].shape != expected[k].shape
    ]
    problems = []
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if items:
            shown = ", ".join(items[:_MAX_LISTED])
            more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
            problems.append(f"{len(items)} {title}: {shown}{more}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def sam_from_state_dict(
    sd: Mapping[str, torch.Tensor],
    config: SamConfig | str | None = None,
    source: str = "state dict",
) -> tuple[Sam, SamConfig]:
    """Build the architecture (given, or inferred from shapes) and load ``sd`` strictly
    (names and shapes must match, every floating tensor must be finite)."""
    if config is None:
        try:
            config = infer_config(sd)
        except ValueError as err:
            raise CheckpointError(f"{source}: {err}") from None
    elif isinstance(config, str):
        from .build import CONFIGS

        if config not in CONFIGS:
            raise CheckpointError(f"unknown model type {config!r}; known: {sorted(CONFIGS)}")
        config = CONFIGS[config]
    model = build_sam(config)
    check_state_dict(model, sd, source)
    check_finite(sd, source)
    model.load_state_dict(sd, strict=True)
    return model.eval(), config


def load_sam_checkpoint(
    path: str | os.PathLike, model_type: str | SamConfig | None = None
) -> tuple[Sam, SamConfig]:
    """Load a SAM checkpoint file into a CPU model in eval mode.

    ``model_type`` ("vit_b", "vit_l", "vit_h", "vit_t" or a :class:`SamConfig`) is inferred
    from tensor shapes when None; a config stored in the checkpoint is used when present.
    """
    obj = read_checkpoint(path)
    sd, stored = extract_state_dict(obj, source=str(path))
    if model_type is None and stored is not None:
        try:
            model_type = SamConfig.from_dict(stored)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: invalid stored config: {err}") from None
    return sam_from_state_dict(sd, model_type, source=str(path))
