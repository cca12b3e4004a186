"""Small building blocks shared by the SAM encoders and the mask decoder."""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) → (B, C, H, W), normalised over C."""
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them (``lin1`` → act → ``lin2``)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., embedding_dim) → (..., embedding_dim)."""
        return self.lin2(self.act(self.lin1(x)))


class Scratch:
    """One growing byte buffer handed out as tensors, for large temporaries that are
    dead before the next request (the attention matrices of successive encoder blocks).
    Owned by one forward pass; freed with it."""

    def __init__(self) -> None:
        self._buf: torch.Tensor | None = None

    def tensor(
        self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` / ``dtype`` on ``device`` (it aliases
        the tensors handed out before)."""
        n = 1
        for d in shape:
            n *= int(d)
        nbytes = n * torch.empty((), dtype=dtype).element_size()
        if self._buf is None or self._buf.numel() < nbytes or self._buf.device != device:
            self._buf = None  # free the old buffer before allocating the new one
            self._buf = torch.empty(nbytes, dtype=torch.uint8, device=device)
        return self._buf[:nbytes].view(dtype).view(shape)


ATTENTION_IMPLS = ("exact", "sdpa")


class SwitchableAttention(nn.Module):
    """Base of attention modules with two numerically equivalent implementations.

    ``impl = "exact"`` materialises the attention matrix in the same order of operations
    as the reference code (bit-for-bit parity in float32); ``"sdpa"`` calls
    ``torch.nn.functional.scaled_dot_product_attention`` (fused, faster, equal within
    float tolerance). Switch with :func:`set_attention_impl`.
    """

    impl: str = "sdpa"


def set_attention_impl(module: nn.Module, impl: str) -> None:
    """Switch every :class:`SwitchableAttention` inside ``module`` to ``impl``."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
    for m in module.modules():
        if isinstance(m, SwitchableAttention):
            m.impl = impl
