"""Stochastic depth (DropPath) for residual branches.

Kept here instead of importing timm: timm pulls in torchvision, whose CPU/CUDA build mismatches are a
known trap on CPU machines (timm 0.4.12, the official code's version, imports torchvision in
``timm/__init__``), and DropPath is a few lines.
"""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Zero a whole residual branch per sample with probability ``p`` during training.

    Survivors are scaled by ``1 / (1 - p)`` so the expected branch output is unchanged; at eval time
    (or with ``p == 0``) this is the identity.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(mask_shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def linear_rates(max_rate: float, count: int) -> list[float]:
    """``count`` rates rising linearly from 0 to ``max_rate`` (torch.linspace without a tensor).

    Plain Python so that networks can be built under ``torch.device("meta")`` for quick counting.
    """
    if count <= 1:
        return [0.0] * count
    return [max_rate * i / (count - 1) for i in range(count)]
