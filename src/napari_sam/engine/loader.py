"""``load_model``: a SAM model on a device with a precision policy, ready for Predictor."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..model.build import CONFIGS, SamConfig
from ..model.checkpoint import load_sam_checkpoint
from ..model.common import set_attention_impl
from ..model.image_encoder import set_fast_path as set_vit_fast_path
from ..model.sam import Sam
from ..model.tiny_vit import set_fast_path as set_tiny_vit_fast_path
from .device import resolve_device, tune_cpu_allocator
from .plan import DecodePlan, resolve_plan


@dataclass
class SamModel:
    """A loaded SAM: module, architecture, device and its :class:`~.plan.DecodePlan`
    (the concrete precision and which engine paths it takes).

    ``name`` is the registry name or checkpoint file name; ``weights_hash`` identifies
    the weights and is what the embedding cache records: for a model loaded from a file
    (:func:`load_model`) the file's hash, ``"alg:hexdigest"`` — the registry's verified
    hash, else SHA-256 computed once while loading; for a model built in memory
    (:func:`wrap_model` without ``weights_hash``) the SHA-256 over tensor names, shapes
    and bytes (:func:`state_dict_hash`, computed on first use).
    """

    sam: Sam
    config: SamConfig
    name: str
    device: torch.device
    plan: DecodePlan
    _weights_hash: str | None = field(default=None, repr=False)
    _dense_pe: torch.Tensor | None = field(default=None, repr=False)

    @property
    def precision(self) -> str:
        """The concrete encoder precision, ``"fp32"`` or ``"bf16"``."""
        return self.plan.precision

    @property
    def exact(self) -> bool:
        """Loaded with ``precision="fp32"``: the parity mode — every step uses the
        official operation order (no folded decoder, no fused attention). ``"auto"``
        resolving to fp32 is not exact."""
        return self.plan.exact

    @property
    def weights_hash(self) -> str:
        if self._weights_hash is None:
            self._weights_hash = state_dict_hash(self.sam)
        return self._weights_hash

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input (B, 3, S, S) on ``device`` → float32 features (B, C, h, w).

        In bf16 the encoder's weights are bfloat16 (converted once in :func:`wrap_model`)
        and the input is cast to match; the output is always float32.
        """
        encoder = self.sam.image_encoder
        dtype = next(encoder.parameters()).dtype
        return encoder(x.to(dtype)).float()

    @property
    def dense_pe(self) -> torch.Tensor:
        """Positional encoding of the embedding grid (1, C, h, w), computed once."""
        if self._dense_pe is None:
            with torch.inference_mode():
                self._dense_pe = self.sam.prompt_encoder.get_dense_pe()
        return self._dense_pe


def state_dict_hash(module: torch.nn.Module) -> str:
    """SHA-256 hex digest of a module's state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_hash(path: str | os.PathLike) -> str:
    """``"sha256:<hexdigest>"`` of a file, read once in blocks."""
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def short_hash(digest: str) -> str:
    """The first 12 hex digits of a weights hash, for messages (``"alg:"`` dropped)."""
    return str(digest).split(":")[-1][:12]


def wrap_model(
    sam: Sam,
    config: SamConfig,
    name: str,
    device: str | torch.device = "auto",
    precision: str = "auto",
    weights_hash: str | None = None,
) -> SamModel:
    """Put an already-built :class:`Sam` on a device with a precision policy.

    The paths it takes are its :class:`~.plan.DecodePlan` (:func:`~.plan.resolve_plan`):
    fp32 uses the exact attention (same operation order as the official code). bf16
    converts the image encoder's weights to bfloat16 once (after hashing the original
    weights, so ``weights_hash`` does not depend on the precision) and uses fused
    scaled-dot-product attention on GPUs (the materialised one, in bf16, on a CPU);
    prompt encoder and mask decoder stay float32.
    ``weights_hash``: the identity of the weights when known (a checkpoint file's hash);
    None → :func:`state_dict_hash` of ``sam``.
    Predictors of a model loaded with ``precision="fp32"`` (``exact``) decode with the
    official mask decoder; otherwise with the folded one.
    On a CPU, glibc is told to keep freed activations for reuse
    (:func:`~napari_sam.engine.device.tune_cpu_allocator`; ``NAPARI_SAM_MALLOC_TUNING=0``
    turns that off).
    """
    dev = resolve_device(device)
    plan = resolve_plan(dev, precision)
    if dev.type == "cpu":
        tune_cpu_allocator()  # reuse freed activations instead of faulting pages in
    sam = sam.to(dev).eval()
    model = SamModel(
        sam=sam, config=config, name=name, device=dev, plan=plan, _weights_hash=weights_hash
    )
    # TinyViT (vit_t): batch norms folded, channels-last convolutions — outside the exact
    # mode; folded in fp32 before any bf16 conversion
    set_tiny_vit_fast_path(sam, plan.fold_tiny_vit)
    set_vit_fast_path(sam, plan.fast_vit)  # ViT: contiguous residual, chunked attention
    if plan.precision == "bf16":
        _ = model.weights_hash
        sam.image_encoder.to(torch.bfloat16)
    set_attention_impl(sam, plan.attention)
    return model


def load_model(
    name: str = "vit_b",
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> SamModel:
    """Load a SAM model.

    Args:
        name: a registry name (``vit_b``, ``vit_l``, ``vit_h``, ``vit_t``, ``vit_b_lm``,
            ..., see :func:`napari_sam.weights.available_models`) or an architecture
            type when ``checkpoint`` is given. A path to a checkpoint file works too.
        checkpoint: checkpoint file; None → the registry file (downloaded and
            hash-checked into the cache on first use).
        device: ``"auto"`` (cuda > mps > cpu) or a torch device string.
        precision: ``"auto"``, ``"fp32"`` (exact) or ``"bf16"``.
        cache_dir: where downloads go (default: ``$NAPARI_SAM_CACHE_DIR`` or the user
            cache dir).
    """
    from .. import weights

    model_type: str | None = None
    if checkpoint is None and Path(name).suffix in {".pt", ".pth", ".ckpt"}:
        checkpoint, name = name, Path(name).name
    digest: str | None = None  # the file's hash, when the download check computed it
    if checkpoint is None:
        info = weights.get_model_info(name)
        checkpoint, digest = weights.fetch_verified(info, cache_dir=cache_dir)
        # "custom" (the packaged demo): the architecture comes from the stored config
        model_type = info.model_type if info.model_type in CONFIGS else None
    elif name in CONFIGS:
        model_type = name
    elif name in weights.available_models():
        model_type = weights.get_model_info(name).model_type
        model_type = model_type if model_type in CONFIGS else None
    sam, config = load_sam_checkpoint(checkpoint, model_type)
    # the weights are hashed once per load: the verified registry hash, else the file's
    digest = digest or file_hash(checkpoint)
    return wrap_model(sam, config, name, device, precision, weights_hash=digest)
