"""A plain, obviously-correct selective scan: the oracle the fast backends are tested against.

Why it exists: every other backend (the blocked PyTorch scan, our CUDA kernel, mamba-ssm) is
checked against this loop, so it is written for readability, not speed. It follows the maths
literally, one time step at a time, and lets autograd differentiate it. It iterates over
``unbind()`` views rather than indexing ``x[..., t]``: per-step indexing under autograd makes the
backward quadratic in L (every ``SelectBackward`` zero-fills a full-size gradient).

It computes in float64 when any floating input is float64 (the oracle setting of the tests),
otherwise in float32, and returns the output in the dtype of ``u`` (float32 with
``out_float32``), like the other backends. Argument checking is done by
:func:`nnunetv2_cipa.ops.selective_scan`; call that with ``backend="reference"`` in user code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    out_float32: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """y_t = sum_n C_t,n h_t,n + D u_t with h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t (h_{-1} = 0).

    Shapes: u, delta (batch, K*Dk, L); A (K*Dk, N); B, C (batch, K, N, L); D, delta_bias (K*Dk,).
    Channel d reads the B/C group ``d // Dk``.
    """
    tensors = [t for t in (u, delta, A, B, C, D, delta_bias) if t is not None]
    compute = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    batch, channels, length = u.shape
    groups = B.shape[1]
    per_group = channels // groups

    dt = delta.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)  # log(1 + exp(x)), and x itself above 20 (threshold 20, as in the kernels)
    u_c = u.to(compute)
    A_c = A.to(compute)
    # Each channel reads the B/C rows of its group: (batch, K, N, L) -> (batch, K*Dk, N, L).
    B_c = B.to(compute).repeat_interleave(per_group, dim=1)
    C_c = C.to(compute).repeat_interleave(per_group, dim=1)

    h = torch.zeros(batch, channels, A.shape[1], dtype=compute, device=u.device)
    outputs = []
    for dt_t, u_t, B_t, C_t in zip(dt.unbind(-1), u_c.unbind(-1), B_c.unbind(-1), C_c.unbind(-1)):
        decay = torch.exp(dt_t[:, :, None] * A_c)  # (batch, channels, N)
        h = decay * h + (dt_t * u_t)[:, :, None] * B_t
        outputs.append((h * C_t).sum(-1))
    y = torch.stack(outputs, dim=-1)
    if length == 0:
        y = torch.zeros(batch, channels, 0, dtype=compute, device=u.device)
    if D is not None:
        y = y + D.to(compute)[:, None] * u_c
    out_dtype = torch.float32 if (out_float32 and u.dtype != torch.float64) else u.dtype
    y = y.to(out_dtype)
    if return_last_state:
        return y, h
    return y
