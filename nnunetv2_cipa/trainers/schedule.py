"""Linear warm-up then cosine decay, stepped the way nnU-Net steps schedulers.

nnU-Net calls ``lr_scheduler.step(self.current_epoch)`` once at the start of every epoch (also after
``--c``, with the resumed epoch), and never saves scheduler state. So the learning rate must be a pure
function of the epoch index: this scheduler keeps no state besides ``last_epoch``.

Why warm-up + cosine: it is the official CIPA recipe (cosine from 1 to ~0; optional linear warm-up),
and AdamW on Mamba/transformer-style blocks trained from scratch is unstable for the first updates at
full learning rate. Per-parameter-group ``lr_scale`` (default 1) is honoured.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def warmup_cosine_factor(epoch: int, num_epochs: int, warmup_epochs: int, final_fraction: float) -> float:
    """Multiplier of the peak learning rate at ``epoch`` (0-based)."""
    if num_epochs <= 0:
        raise ValueError(f"num_epochs={num_epochs}: must be positive")
    epoch = min(max(int(epoch), 0), num_epochs - 1)
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    span = max(1, num_epochs - warmup_epochs - 1)
    progress = (epoch - warmup_epochs) / span
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class WarmupCosineLR(LRScheduler):
    """``step(epoch)`` sets every group's lr to ``peak_lr * lr_scale * factor(epoch)``."""

    def __init__(
        self,
        optimizer: Optimizer,
        peak_lr: float,
        num_epochs: int,
        warmup_epochs: int = 0,
        final_fraction: float = 1e-3,
    ) -> None:
        if warmup_epochs < 0 or warmup_epochs >= max(num_epochs, 1):
            warmup_epochs = max(0, min(warmup_epochs, num_epochs - 1))
        self.peak_lr = float(peak_lr)
        self.num_epochs = int(num_epochs)
        self.warmup_epochs = int(warmup_epochs)
        self.final_fraction = float(final_fraction)
        self._counter = 0
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor = warmup_cosine_factor(
            max(self.last_epoch, 0), self.num_epochs, self.warmup_epochs, self.final_fraction
        )
        return [self.peak_lr * group.get("lr_scale", 1.0) * factor for group in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:  # noqa: D102 - nnU-Net passes the epoch index
        if epoch is None or epoch == -1:
            epoch = self._counter
            self._counter += 1
        self.last_epoch = int(epoch)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs
