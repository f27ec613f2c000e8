"""The pure-PyTorch selective scan: time-major, blocked in time, one autograd.Function.

Why it looks like this (measurements in ``docs/selective_scan_reference.md`` §3 and
``benchmarks/selective_scan.py``):

* **Time-major, contiguous.** Inputs are transposed once to (L, batch, K, Dk) / (L, batch, K, N)
  so each time step is one contiguous slab (batch, K, Dk, N) and every per-step op is a dense
  vector op.
* **One autograd.Function with an analytic backward.** The reverse recurrence
  ``G_t = gy_t C_t + a_{t+1} G_{t+1}`` gives every gradient in a few dense passes; autograd
  through a per-step loop is several times slower (and quadratic if it indexes per step).
* **Blocked in time, with recomputation.** The big (L, batch, K, Dk, N) tensors of a naive
  implementation are 1.6 GB each at the CIPA stage-0 shape. Instead the sequence is processed in
  blocks of a few MB: the forward keeps only the state at each block start (a checkpoint, like
  the CUDA kernel's chunk carries) and the backward walks the blocks last to first, recomputing
  ``a = exp(dt A)`` and ``h`` of one block from its checkpoint. Peak memory is then a few blocks
  plus the (L, batch, K*Dk) inputs, and the per-block tensors stay in cache. When the whole
  problem is small, one block covers the sequence and the forward's tensors are kept instead.
* **Two scan primitives**, equal to fp32 rounding: a plain sequential loop (one ``addcmul_``
  per step) when the per-step slab is large (bandwidth-bound, touches each element once), and a
  two-level chunked scan (sequential inside chunks of ~sqrt(T) steps, vectorised over chunks,
  then a carry across chunk ends and one fix-up) when the slab is small and Python per-op
  overhead dominates. Both use only products of ``a <= 1`` and sums: no log-space scan (large
  gradient errors in fp32) and no division-based closed form (overflows at N = 16).

Compute dtype: float32 for fp16/bf16/fp32 inputs (fp32 state), float64 for float64 inputs
(the test oracle setting). Argument checking lives in :mod:`nnunetv2_cipa.ops.selective_scan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Per-step slab (batch * K*Dk * N elements) from which the sequential loop beats the chunked scan.
#: The reference doc measured chunked ahead at slabs of 256-512 and seq ahead at >= 16 K; on this
#: machine (``benchmarks/selective_scan_plans.py``, 1 and 2 threads) seq already wins from ~1 K.
SEQ_MIN_SLAB = 1024
#: Elements of one per-block (T, batch, K, Dk, N) tensor when the sequence is split into blocks.
BLOCK_ELEMENTS = 1 << 19
#: Each block costs ~25 tensor ops besides its few ops per step; much shorter blocks let that
#: overhead dominate (every op also pays a thread barrier on a busy machine), so large slabs get
#: blocks of at least this many steps, up to MAX_BLOCK_ELEMENTS per block tensor (32 MiB in fp32).
#: Measured (CPU time, 1 thread, 2x(4*768)x1024, N=16): 5, 10 and 16 steps equal, 32 steps +10 %
#: (out of cache), one unblocked block +95 %.
MIN_BLOCK_STEPS = 16
#: Layout copies loop over the batch (2-D transposes) up to this batch size.
PER_BATCH_TRANSPOSE_MAX = 16
MAX_BLOCK_ELEMENTS = 1 << 23
#: Up to this many elements in a full (L, batch, K, Dk, N) tensor, one block covers the whole
#: sequence and its tensors are kept for the backward instead of recomputed.
KEEP_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ScanPlan:
    """How one call is executed; the choice changes speed and memory, never the result."""

    algorithm: str  # "seq" or "chunked"
    block_steps: int  # time steps per block
    keep: bool  # keep per-block tensors from the forward (True) or recompute them (False)


def make_plan(
    length: int,
    slab: int,
    algorithm: str | None = None,
    block_steps: int | None = None,
    keep: bool | None = None,
) -> ScanPlan:
    """Pick scan primitive, block length and keep/recompute for a (length, slab) problem."""
    if algorithm is None:
        algorithm = "seq" if slab >= SEQ_MIN_SLAB else "chunked"
    if algorithm not in ("seq", "chunked"):
        raise ValueError(f"scan algorithm must be 'seq' or 'chunked', got {algorithm!r}")
    if block_steps is None:
        if length * slab <= KEEP_ELEMENTS:
            block_steps = length
        else:
            block_steps = max(1, BLOCK_ELEMENTS // slab, min(MIN_BLOCK_STEPS, MAX_BLOCK_ELEMENTS // slab))
            if algorithm == "chunked":
                # The chunked scan needs long blocks to amortise its per-op overhead.
                block_steps = max(block_steps, 256)
    block_steps = max(1, min(int(block_steps), length))
    if keep is None:
        keep = block_steps >= length
    return ScanPlan(algorithm, block_steps, keep)


# --------------------------------------------------------------------------------------------
# Scan primitives, in place on 2-D views (T, S). ``x`` holds the inputs and receives the states.


def _chunk_size(steps: int) -> int:
    return max(2, 2 ** round(math.log2(max(steps, 1)) / 2))


def scan_forward_(x: torch.Tensor, a: torch.Tensor, algorithm: str) -> None:
    """x[t] += a[t] * x[t-1] for t = 1..T-1 (a first-order linear recurrence, in place)."""
    steps = x.shape[0]
    start = 1
    if algorithm == "chunked":
        chunk = _chunk_size(steps)
        n_chunks = steps // chunk
        if n_chunks >= 2:
            main = n_chunks * chunk
            xv = x[:main].view(n_chunks, chunk, -1)
            av = a[:main].view(n_chunks, chunk, -1)
            for j in range(1, chunk):  # all chunks at once, each from zero
                xv[:, j].addcmul_(av[:, j], xv[:, j - 1])
            # prod[c, j] = a[c, 0] * ... * a[c, j]: how chunk c+1 carries the state entering it.
            prod = torch.cumprod(av[1:], dim=1)
            for c in range(1, n_chunks):  # exact chunk-end states, one chunk after the other
                xv[c, -1].addcmul_(prod[c - 1, -1], xv[c - 1, -1])
            xv[1:, :-1].addcmul_(prod[:, :-1], xv[:-1, -1:])  # the rest of each chunk at once
            start = main
    xs, as_ = x.unbind(0), a.unbind(0)
    for t in range(start, steps):
        xs[t].addcmul_(as_[t], xs[t - 1])


def scan_reverse_(x: torch.Tensor, c: torch.Tensor, algorithm: str) -> None:
    """x[t] += c[t] * x[t+1] for t = T-2..0 (the same recurrence run backwards, in place)."""
    steps = x.shape[0]
    stop = steps - 1  # positions < stop still to do in the tail loop
    if algorithm == "chunked":
        chunk = _chunk_size(steps)
        n_chunks = steps // chunk
        if n_chunks >= 2:
            rest = steps - n_chunks * chunk  # chunks are aligned to the end, where the scan starts
            xv = x[rest:].view(n_chunks, chunk, -1)
            cv = c[rest:].view(n_chunks, chunk, -1)
            for j in range(chunk - 2, -1, -1):
                xv[:, j].addcmul_(cv[:, j], xv[:, j + 1])
            # prod[c, j] = c[c, j] * ... * c[c, chunk-1]: how chunk c receives the state after it.
            prod = torch.flip(torch.cumprod(torch.flip(cv[:-1], dims=(1,)), dim=1), dims=(1,))
            for k in range(n_chunks - 2, -1, -1):
                xv[k, 0].addcmul_(prod[k, 0], xv[k + 1, 0])
            xv[:-1, 1:].addcmul_(prod[:, 1:], xv[1:, :1])
            stop = rest
    xs, cs = x.unbind(0), c.unbind(0)
    for t in range(stop - 1, -1, -1):
        xs[t].addcmul_(cs[t], xs[t + 1])


# --------------------------------------------------------------------------------------------
# One block of time steps. Shapes: T steps, slab (Bt, K, Dk, N); dt/dtu (T, Bt, K, Dk);
# Bm/Cm (T, Bt, K, N); A3 (K, Dk, N).


def _block_states(
    dt: torch.Tensor,
    dtu: torch.Tensor,
    Bm: torch.Tensor,
    A3: torch.Tensor,
    h0: torch.Tensor | None,
    algorithm: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """a = exp(dt A) and the states h of one block, starting from state h0 (None = zero)."""
    steps = dt.shape[0]
    a = torch.mul(dt.unsqueeze(-1), A3).exp_()
    h = torch.mul(dtu.unsqueeze(-1), Bm.unsqueeze(-2))
    af, hf = a.view(steps, -1), h.view(steps, -1)
    if h0 is not None:
        hf[0].addcmul_(af[0], h0.reshape(-1))
    scan_forward_(hf, af, algorithm)
    return a, h


def _contract_c(h: torch.Tensor, Cm: torch.Tensor) -> torch.Tensor:
    """sum_n h[..., d, n] * C[..., n] as one batched matmul: (T, Bt, K, Dk)."""
    steps, batch, groups, per_group, n = h.shape
    m = steps * batch * groups
    return torch.bmm(h.view(m, per_group, n), Cm.reshape(m, n, 1)).view(steps, batch, groups, per_group)


class _SelectiveScanFunction(torch.autograd.Function):
    """Forward and analytic backward of the whole op (prologue, scan, epilogue) in fp32/fp64."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, out_float32, plan_overrides,
                grad_wanted):
        # Unused outputs (usually last_state) arrive as None in backward instead of zero tensors.
        ctx.set_materialize_grads(False)
        with torch.autocast(device_type=u.device.type, enabled=False):
            return _forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, out_float32,
                            plan_overrides, grad_wanted)

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        with torch.autocast(device_type=ctx.device_type, enabled=False):
            return _backward(ctx, grad_y, grad_last)


def _time_major(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, ..., L) -> contiguous (L, batch, ...) in ``dtype``.

    One 2-D transpose per batch element: PyTorch copies a plain 2-D transpose with a cache-blocked
    kernel, about 4x faster than the general strided copy a 3-D/4-D permute gets (measured 12 vs
    44 ms for 2x768x4096 fp32), and these layout copies are a sizeable part of the whole op.
    """
    batch, length = t.shape[0], t.shape[-1]
    middle = t.shape[1:-1]
    out = torch.empty((length, batch, *middle), dtype=dtype, device=t.device)
    if batch > PER_BATCH_TRANSPOSE_MAX:  # many short sequences: one strided copy beats a Python loop
        return out.copy_(t.permute(t.dim() - 1, *range(t.dim() - 1)))
    rows = t.reshape(batch, -1, length)
    flat = out.view(length, batch, -1)
    for b in range(batch):
        flat[:, b].copy_(rows[b].t().contiguous())
    return out


def _from_time_major(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Contiguous (L, batch, ...) -> contiguous (batch, ..., L) in ``dtype`` (inverse of _time_major)."""
    length, batch = t.shape[0], t.shape[1]
    middle = t.shape[2:]
    out = torch.empty((batch, *middle, length), dtype=dtype, device=t.device)
    if batch > PER_BATCH_TRANSPOSE_MAX:
        return out.copy_(t.permute(*range(1, t.dim()), 0))
    flat = t.view(length, batch, -1)
    rows = out.view(batch, -1, length)
    for b in range(batch):
        rows[b].copy_(flat[:, b].contiguous().t())
    return out


def _forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, out_float32, plan_overrides, grad_wanted):
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, channels, length = u.shape
    groups, n_state = B.shape[1], B.shape[2]
    per_group = channels // groups
    slab = batch * channels * n_state
    plan = make_plan(length, slab, **(plan_overrides or {}))

    u_t = _time_major(u, compute)  # (L, Bt, KD)
    v = _time_major(delta, compute)
    if delta_bias is not None:
        v += delta_bias.to(compute)
    if delta_softplus:
        dt = torch.nn.functional.softplus(v)  # threshold 20, like the CUDA kernels
        # d softplus / dv, kept instead of v (same size): 1 above the threshold, sigmoid below.
        dsoftplus = torch.where(v > 20, torch.ones_like(v), torch.sigmoid(v))
    else:
        dt, dsoftplus = v, None
    del v
    B_t = _time_major(B, compute)  # (L, Bt, K, N)
    C_t = _time_major(C, compute)
    A3 = A.to(compute).view(groups, per_group, n_state)
    shape4 = (length, batch, groups, per_group)
    dt4, u4 = dt.view(shape4), u_t.view(shape4)
    dtu = dt4 * u4

    # needs_input_grad is also True under torch.no_grad(); grad_wanted says whether a backward can come.
    needs_grad = grad_wanted and any(ctx.needs_input_grad[:7])
    y = torch.empty(shape4, dtype=compute, device=u.device)
    h_prev = None
    checkpoints: list[torch.Tensor | None] = []
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    for t0 in range(0, length, plan.block_steps):
        t1 = min(t0 + plan.block_steps, length)
        a, h = _block_states(dt4[t0:t1], dtu[t0:t1], B_t[t0:t1], A3, h_prev, plan.algorithm)
        torch.bmm(
            h.view(-1, per_group, n_state), C_t[t0:t1].reshape(-1, n_state, 1),
            out=y[t0:t1].view(-1, per_group, 1),
        )
        checkpoints.append(h_prev)
        if needs_grad and plan.keep:
            kept.append((a, h))
        h_prev = h[-1].clone()
        del a, h
    last_state = h_prev.view(batch, channels, n_state)
    if D is not None:
        y.view(length, batch, channels).addcmul_(u_t, D.to(compute))
    out_dtype = torch.float32 if (out_float32 and u.dtype != torch.float64) else u.dtype
    out = _from_time_major(y.view(length, batch, channels), out_dtype)

    ctx.device_type = u.device.type
    if needs_grad:
        ctx.plan = plan
        ctx.sizes = (batch, groups, per_group, n_state, length)
        ctx.dtypes = (u.dtype, delta.dtype, B.dtype, C.dtype, compute)
        ctx.weight_dtypes = (A.dtype, None if D is None else D.dtype,
                             None if delta_bias is None else delta_bias.dtype)
        ctx.tensors = (u4, dt4, dtu, dsoftplus, B_t, C_t, A3, D)
        ctx.checkpoints = checkpoints
        ctx.kept = kept
    return out, last_state


def _backward(ctx, grad_y, grad_last):
    plan: ScanPlan = ctx.plan
    batch, groups, per_group, n_state, length = ctx.sizes
    u_dtype, delta_dtype, B_dtype, C_dtype, compute = ctx.dtypes
    A_dtype, D_dtype, bias_dtype = ctx.weight_dtypes
    u4, dt4, dtu, dsoftplus, B_t, C_t, A3, D = ctx.tensors
    channels = groups * per_group
    device = u4.device
    need_u, need_delta, need_A, need_B, need_C, need_D, need_bias = ctx.needs_input_grad[:7]

    shape4 = (length, batch, groups, per_group)
    if grad_y is None:
        gy = torch.zeros(shape4, dtype=compute, device=device)
    else:
        gy = _time_major(grad_y, compute).view(shape4)
    carry = None
    if grad_last is not None:
        carry = grad_last.to(compute).reshape(-1)

    gdt = torch.empty(shape4, dtype=compute, device=device)
    gu = torch.empty(shape4, dtype=compute, device=device)
    gB = torch.empty((length, batch, groups, n_state), dtype=compute, device=device) if need_B else None
    gC = torch.empty((length, batch, groups, n_state), dtype=compute, device=device) if need_C else None
    gA = torch.zeros_like(A3)

    starts = list(range(0, length, plan.block_steps))
    for index in range(len(starts) - 1, -1, -1):
        t0 = starts[index]
        t1 = min(t0 + plan.block_steps, length)
        steps = t1 - t0
        m = steps * batch * groups
        h0 = ctx.checkpoints[index]
        dt_b, dtu_b, B_b, C_b, gy_b = dt4[t0:t1], dtu[t0:t1], B_t[t0:t1], C_t[t0:t1], gy[t0:t1]
        if plan.keep:
            a, h = ctx.kept[index]
            own_a = False
        else:
            a, h = _block_states(dt_b, dtu_b, B_b, A3, h0, plan.algorithm)
            own_a = True
        hv = h.view(m, per_group, n_state)
        if gC is not None:
            torch.bmm(gy_b.reshape(m, 1, per_group), hv, out=gC[t0:t1].view(m, 1, n_state))

        # G_t = dL/dh_t: direct term gy_t C_t, then the reverse recurrence G_t += a_{t+1} G_{t+1}.
        G = torch.mul(gy_b.unsqueeze(-1), C_b.unsqueeze(-2))
        Gf, af = G.view(steps, -1), a.view(steps, -1)
        if carry is not None:
            Gf[-1].add_(carry)
        if steps > 1:
            Gf[-2].addcmul_(af[-1], Gf[-1])
            scan_reverse_(Gf[:-1], af[1:], plan.algorithm)
        Gv = G.view(m, per_group, n_state)

        # q_t = G_t a_t h_{t-1}: the gradient reaching a_t, times a_t (da/d(dt A) = a).
        q = a.mul_(G) if own_a else torch.mul(a, G)
        qf = q.view(steps, -1)
        carry = qf[0].clone()  # a_{t0} G_{t0}: what the previous block's last step receives
        if steps > 1:
            qf[1:].mul_(h.view(steps, -1)[:-1])
        if h0 is None:
            qf[0].zero_()
        else:
            qf[0].mul_(h0.reshape(-1))

        # sum_n G_t B_t: shared by d/du and d/d(dt).
        GB = torch.bmm(Gv, B_b.reshape(m, n_state, 1)).view(steps, batch, groups, per_group)
        torch.mul(GB, dt_b, out=gu[t0:t1])
        gdt_b = gdt[t0:t1]
        torch.mul(GB, u4[t0:t1], out=gdt_b)
        gdt_b += (q * A3).sum(-1)
        if need_A:
            gA += (q * dt_b.unsqueeze(-1)).sum((0, 1))
        if gB is not None:
            torch.bmm(dtu_b.reshape(m, 1, per_group), Gv, out=gB[t0:t1].view(m, 1, n_state))
        del a, h, G, Gv, q, qf, Gf, af, hv

    gy3 = gy.view(length, batch, channels)
    u3 = u4.view(length, batch, channels)
    grad_u = grad_delta = grad_A = grad_B = grad_C = grad_D = grad_bias = None
    if need_u:
        gu3 = gu.view(length, batch, channels)
        if D is not None:
            gu3.addcmul_(gy3, D.to(compute))
        grad_u = _from_time_major(gu3, u_dtype)
    gdelta = gdt.view(length, batch, channels)
    if dsoftplus is not None:
        gdelta.mul_(dsoftplus)
    if need_delta:
        grad_delta = _from_time_major(gdelta, delta_dtype)
    if need_bias:
        grad_bias = gdelta.sum((0, 1)).to(bias_dtype)
    if need_A:
        grad_A = gA.view(channels, n_state).to(A_dtype)
    if need_B:
        grad_B = _from_time_major(gB, B_dtype)
    if need_C:
        grad_C = _from_time_major(gC, C_dtype)
    if need_D:
        grad_D = (gy3 * u3).sum((0, 1)).to(D_dtype)
    return grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_bias, None, None, None, None


def selective_scan_torch(
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
    *,
    algorithm: str | None = None,
    block_steps: int | None = None,
    keep: bool | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch backend (inputs already checked). Keyword-only knobs force a plan (tests, benchmarks).

    Unlike mamba-ssm, the gradient of ``last_state`` is propagated too.
    """
    overrides = {"algorithm": algorithm, "block_steps": block_steps, "keep": keep}
    tensors = (u, delta, A, B, C, D, delta_bias)
    grad_wanted = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    out, last_state = _SelectiveScanFunction.apply(
        *tensors, bool(delta_softplus), bool(out_float32), overrides, grad_wanted
    )
    if return_last_state:
        return out, last_state
    return out
