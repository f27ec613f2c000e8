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
    groups, n_state = B.shape[1], B.shape[2]
    per_group = channels // groups

    dt = delta.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)  # log(1 + exp(x)), and x itself above 20 (threshold 20, as in the kernels)
    u_c = u.to(compute)
    # Channel d = k * Dk + j reads group k = d // Dk: view channels as (K, Dk) and broadcast the
    # (batch, K, N) rows of B and C over Dk (no copy of B/C per channel).
    grouped = (batch, groups, per_group)
    A_g = A.to(compute).view(groups, per_group, n_state)
    dt_steps = dt.view(*grouped, length).unbind(-1)
    dtu_steps = (dt * u_c).view(*grouped, length).unbind(-1)
    B_steps = B.to(compute).unbind(-1)
    C_steps = C.to(compute).unbind(-1)

    h = torch.zeros(*grouped, n_state, dtype=compute, device=u.device)
    outputs = []
    for dt_t, dtu_t, B_t, C_t in zip(dt_steps, dtu_steps, B_steps, C_steps, strict=True):
        decay = torch.exp(dt_t[..., None] * A_g)  # (batch, K, Dk, N)
        h = decay * h + dtu_t[..., None] * B_t[:, :, None, :]
        outputs.append((h * C_t[:, :, None, :]).sum(-1))  # (batch, K, Dk)
    y = torch.stack(outputs, dim=-1).reshape(batch, channels, length)
    if D is not None:
        y = y + D.to(compute)[:, None] * u_c
    out_dtype = torch.float32 if (out_float32 and u.dtype != torch.float64) else u.dtype
    y = y.to(out_dtype)
    if return_last_state:
        return y, h.reshape(batch, channels, n_state)
    return y
