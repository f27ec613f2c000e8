"""The one place where blocks call the selective scan.

Why a wrapper: (1) the scan must run in fp32 even under autocast, because its recurrence multiplies
hundreds to thousands of decays in a row and bf16/fp16 state drifts badly (the official wrapper forces
fp32 the same way); (2) FLOP counting (``architectures.counting``) needs to see every scan call with its
shapes, since a dispatch-level counter cannot tell the scan's internal arithmetic from the network's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from nnunetv2_cipa.ops import selective_scan


@dataclass
class ScanTally:
    """Calls and FLOPs of the selective scans run while a tally is active.

    FLOPs per call follow VMamba's ``flops_selective_scan_ref`` (the formula that adds back the scans
    the official counter skips): ``9 * batch * L * channels * N`` plus ``batch * channels * L`` for the
    D skip term.
    """

    calls: int = 0
    flops: int = 0
    shapes: list[tuple[int, int, int, int]] = field(default_factory=list)


_ACTIVE_TALLY: contextvars.ContextVar[ScanTally | None] = contextvars.ContextVar("scan_tally", default=None)


@contextlib.contextmanager
def tally_scans() -> Iterator[ScanTally]:
    """Count scans instead of running them (used for FLOP counting on the meta device).

    Inside the context every scan call is recorded and returns an uninitialised tensor of the right
    shape and dtype: counting never needs values, and the meta device has none anyway.
    """
    tally = ScanTally()
    token = _ACTIVE_TALLY.set(tally)
    try:
        yield tally
    finally:
        _ACTIVE_TALLY.reset(token)


def fp32_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """Run ``nnunetv2_cipa.ops.selective_scan`` in fp32 (autocast off); return in ``u``'s dtype.

    Shapes as in docs/interfaces.md: u, delta (batch, K*D, L); A (K*D, N); B, C (batch, K, N, L);
    D, delta_bias (K*D,).
    """
    tally = _ACTIVE_TALLY.get()
    if tally is not None:
        batch, channels, length = u.shape
        n_state = A.shape[1]
        tally.calls += 1
        tally.flops += 9 * batch * length * channels * n_state + batch * channels * length
        tally.shapes.append((batch, channels, length, n_state))
        return u.new_empty(u.shape)

    out_dtype = u.dtype
    with torch.autocast(device_type=u.device.type, enabled=False):
        y = selective_scan(
            u.float(),
            delta.float(),
            A.float(),
            B.float(),
            C.float(),
            None if D is None else D.float(),
            None if delta_bias is None else delta_bias.float(),
            delta_softplus=delta_softplus,
            backend=backend,
        )
    return y.to(out_dtype)
