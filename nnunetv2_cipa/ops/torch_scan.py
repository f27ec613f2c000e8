"""The pure-PyTorch selective scan: time-major, tiled and blocked in time, one autograd.Function.

One file on purpose (it is longer than the project's other modules): the forward and the analytic
backward share the tile and block plan, the workspace and the recomputation of each block, and each is
only checkable beside the other.

Why it looks like this (each choice is timed against its alternative by the ``benchmarks/`` script
named at it; the figures are in docs/benchmarks.md):

* **Time-major, contiguous.** Inputs are transposed to (T, batch, K, Dk) / (T, batch, K, N)
  so each time step is one contiguous slab (batch, K, N, Dk) and every per-step op is a dense
  vector op.
* **State layout (..., N, Dk), channels innermost.** The broadcasts that build a block
  (``dt A``, ``dt u B``, ``gy C``) then run along 192-long contiguous rows instead of 16-long ones,
  the sums over N are reductions over an outer axis (fast), and ``y = sum_n C h`` is the fast
  (1 x N) @ (N x Dk) form of bmm (timed against the (..., Dk, N) layout with
  ``benchmarks/compare_scan_versions.py``).
* **One autograd.Function with an analytic backward.** The reverse recurrence
  ``G_t = gy_t C_t + a_{t+1} G_{t+1}`` gives every gradient in a few dense passes; autograd
  through a per-step loop is several times slower (and quadratic if it indexes per step).
* **Tiles of time for everything of size L.** The sequence is cut into tiles of a few MB: the
  layout copies (in and out), softplus, ``dt * u`` and the output live per tile, so no
  full-length temporary is ever made. Full-length tensors above glibc's mmap limit (32 MB) are
  fresh pages on every call, and their page faults cost system time on every call
  (``benchmarks/selective_scan_parts.py`` counts them and their system time). The backward
  recomputes a tile's inputs from the saved arguments instead of full-length copies.
* **Blocked inside tiles, with recomputation.** The big (L, batch, K, N, Dk) tensors of a naive
  implementation are 1.6 GB each at the CIPA stage-0 shape. Each tile is processed in blocks of
  a few MB: the forward keeps only the state at each block start (a checkpoint, like the CUDA
  kernel's chunk carries) and the backward walks the blocks last to first, recomputing
  ``a = exp(dt A)`` and ``h`` of one block from its checkpoint. When the whole problem is small,
  one block covers the sequence and its tensors are kept instead. Blocks write into one reused
  workspace, so the memory they write is still in cache from the block before.
* **Cheap forms of the heavy ops**: ``exp2`` of ``dt (A log2 e)`` rather than ``exp`` of ``dt A``, and
  the state contractions as (1 x N) @ (N x Dk) matrix products (``benchmarks/selective_scan_parts.py``).
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
#: Below it the chunked scan's fewer, larger ops win (Python per-op overhead dominates); above it the
#: loop's single pass over memory wins. Re-measure with ``benchmarks/selective_scan_plans.py``.
SEQ_MIN_SLAB = 1024
#: Elements of one per-block (T, batch, K, N, Dk) tensor when the sequence is split into blocks.
BLOCK_ELEMENTS = 1 << 19
#: Each block costs ~25 tensor ops besides its few ops per step; much shorter blocks let that
#: overhead dominate (every op also pays a thread barrier on a busy machine), so large slabs get
#: blocks of at least this many steps, up to MAX_BLOCK_ELEMENTS per block tensor (32 MiB in fp32);
#: much longer blocks fall out of cache.
MIN_BLOCK_STEPS = 16
MAX_BLOCK_ELEMENTS = 1 << 23
#: Elements of one per-tile (T, batch, K*Dk) tensor (2 MiB in fp32): tiles hold whole blocks.
TILE_ELEMENTS = 1 << 19
#: Up to this many elements in a full (L, batch, K, N, Dk) tensor, one block covers the whole
#: sequence and its tensors are kept for the backward instead of recomputed.
KEEP_ELEMENTS = 1 << 22
#: Layout copies that read rows of at least a page (4 KiB) go this many rows at a time.
ROW_BLOCK = 128
PAGE_BYTES = 4096


@dataclass(frozen=True)
class ScanPlan:
    """How one call is executed; the choice changes speed and memory, never the result."""

    algorithm: str  # "seq" or "chunked"
    block_steps: int  # time steps per block
    keep: bool  # keep per-block tensors from the forward (True) or recompute them (False)
    tile_steps: int = 0  # time steps per tile, a multiple of block_steps (0: one tile)


def make_plan(
    length: int,
    slab: int,
    algorithm: str | None = None,
    block_steps: int | None = None,
    keep: bool | None = None,
    step_elements: int | None = None,
    tile_steps: int | None = None,
) -> ScanPlan:
    """Pick scan primitive, block and tile length and keep/recompute for a (length, slab) problem.

    ``step_elements`` is the size of one time step of the (T, batch, K*Dk) tensors (default: the
    slab, i.e. N = 1); tiles hold about TILE_ELEMENTS of them and always whole blocks.
    """
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
    if tile_steps is None:
        per_step = max(1, step_elements if step_elements is not None else slab)
        tile_steps = max(1, TILE_ELEMENTS // per_step)
    blocks_per_tile = max(1, math.ceil(int(tile_steps) / block_steps))
    tile_steps = min(blocks_per_tile * block_steps, length)
    return ScanPlan(algorithm, block_steps, keep, tile_steps)


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
# Layout copies of one tile of time: rows (R, L) <-> time-major (T, R).


def _rows_to_time_major(rows: torch.Tensor, t0: int, t1: int, dtype: torch.dtype) -> torch.Tensor:
    """rows[:, t0:t1] of a contiguous (R, L) tensor -> contiguous (t1 - t0, R) in ``dtype``.

    Rows of a page or more are copied ROW_BLOCK rows at a time: one strided copy walks down a
    column across thousands of pages and thrashes the TLB.
    """
    count = rows.shape[0]
    out = torch.empty((t1 - t0, count), dtype=dtype, device=rows.device)
    src, dst = rows[:, t0:t1], out.t()
    page_rows = rows.shape[1] * rows.element_size() >= PAGE_BYTES
    if rows.is_cuda or not page_rows or count <= ROW_BLOCK or t1 - t0 == 1:
        dst.copy_(src)
    else:
        for r0 in range(0, count, ROW_BLOCK):
            dst[r0:r0 + ROW_BLOCK].copy_(src[r0:r0 + ROW_BLOCK])
    return out


def _time_major_to_rows(tile: torch.Tensor, rows: torch.Tensor, t0: int) -> None:
    """Write a (T, R) time-major tile into rows[:, t0:t0+T] of a (R, L) tensor (casting)."""
    rows[:, t0:t0 + tile.shape[0]].copy_(tile.view(tile.shape[0], rows.shape[0]).t())


@dataclass
class _Problem:
    """The call's arguments as (R, L) rows plus sizes; what a tile is rebuilt from."""

    u: torch.Tensor  # (batch*K*Dk, L)
    delta: torch.Tensor  # (batch*K*Dk, L)
    B: torch.Tensor  # (batch*K*N, L)
    C: torch.Tensor  # (batch*K*N, L)
    A3: torch.Tensor  # (K, N, Dk), compute dtype: the state layout puts Dk innermost
    A3_log2e: torch.Tensor  # A3 * log2(e), for exp2
    D: torch.Tensor | None  # (K*Dk,), compute dtype
    bias: torch.Tensor | None  # (K*Dk,), compute dtype
    softplus: bool
    compute: torch.dtype
    batch: int
    groups: int
    per_group: int
    n_state: int
    length: int


@dataclass
class _Tile:
    """Time-major inputs of one tile: (T, batch, K, Dk) and (T, batch, K, N)."""

    u: torch.Tensor
    dt: torch.Tensor
    dtu: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    dsoftplus: torch.Tensor | None  # d softplus / d v (backward only)


def _load_tile(p: _Problem, t0: int, t1: int, for_backward: bool) -> _Tile:
    steps = t1 - t0
    shape4 = (steps, p.batch, p.groups, p.per_group)
    shape_bc = (steps, p.batch, p.groups, p.n_state)
    u = _rows_to_time_major(p.u, t0, t1, p.compute).view(shape4)
    v = _rows_to_time_major(p.delta, t0, t1, p.compute).view(steps, p.batch, -1)
    if p.bias is not None:
        v += p.bias
    dsoftplus = None
    if p.softplus:
        dt = torch.nn.functional.softplus(v)  # threshold 20, like the CUDA kernels
        if for_backward:  # d softplus / dv: sigmoid below the threshold, exactly 1 above it
            dsoftplus = torch.sigmoid(v).masked_fill_(v > 20, 1.0).view(shape4)
    else:
        dt = v
    dt = dt.view(shape4)
    B = _rows_to_time_major(p.B, t0, t1, p.compute).view(shape_bc)
    C = _rows_to_time_major(p.C, t0, t1, p.compute).view(shape_bc)
    return _Tile(u, dt, dt * u, B, C, dsoftplus)


def _tiles(length: int, plan: ScanPlan) -> list[tuple[int, int]]:
    step = plan.tile_steps or length
    return [(t0, min(t0 + step, length)) for t0 in range(0, length, step)]


# --------------------------------------------------------------------------------------------
# One block of time steps. Shapes: T steps, slab (Bt, K, N, Dk); dt/dtu (T, Bt, K, Dk);
# Bm/Cm (T, Bt, K, N); A3 (K, N, Dk).


def _workspace(plan: ScanPlan, p: _Problem, device: torch.device, names: tuple[str, ...]) -> dict:
    """Block-sized (T, Bt, K, N, Dk) buffers that every block of one call writes into.

    Why: a fresh 2 MB tensor per block lands on memory that is no longer in cache, and these
    bandwidth-bound ops then pay for the cache misses of their writes; reused buffers stay cached
    from one block to the next (timed with ``benchmarks/compare_scan_versions.py``).
    """
    shape = (plan.block_steps, p.batch, p.groups, p.n_state, p.per_group)
    return {name: torch.empty(shape, dtype=p.compute, device=device) for name in names}


def _take(work: dict[str, torch.Tensor] | None, name: str, steps: int) -> torch.Tensor | None:
    """The first ``steps`` steps of a workspace buffer, or None (allocate) without a workspace."""
    return None if work is None else work[name][:steps]


def _block_states(
    dt: torch.Tensor,
    dtu: torch.Tensor,
    Bm: torch.Tensor,
    A3_log2e: torch.Tensor,
    h0: torch.Tensor | None,
    algorithm: str,
    work: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """a = exp(dt A) and the states h of one block, starting from state h0 (None = zero).

    With ``work`` (see :func:`_workspace`), a and h are written into its reused buffers.

    ``A3_log2e`` is A * log2(e): exp2 of dt (A log2 e) is exp(dt A) with one rounding more in the
    argument, and PyTorch's CPU exp2 runs several times faster than its exp
    (``benchmarks/selective_scan_parts.py``); the exponential is one of the heaviest block ops.
    """
    steps = dt.shape[0]
    a = torch.mul(dt.unsqueeze(-2), A3_log2e, out=_take(work, "a", steps)).exp2_()
    h = torch.mul(dtu.unsqueeze(-2), Bm.unsqueeze(-1), out=_take(work, "h", steps))
    af, hf = a.view(steps, -1), h.view(steps, -1)
    if h0 is not None:
        hf[0].addcmul_(af[0], h0.reshape(-1))
    scan_forward_(hf, af, algorithm)
    return a, h


def _contract_state(v: torch.Tensor, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """sum_n v[..., n] h[..., n, d]: v (T, Bt, K, N), h (T, Bt, K, N, Dk) -> (T, Bt, K, Dk).

    (1 x N) @ (N x Dk) products: MKL runs that form several times faster than the equal
    (Dk x N) @ (N x 1) one (``benchmarks/selective_scan_parts.py``), and this contraction runs
    twice per block (y forward, sum_n G B backward).
    """
    steps, batch, groups, n, per_group = h.shape
    m = steps * batch * groups
    if out is None:
        out = torch.empty((steps, batch, groups, per_group), dtype=h.dtype, device=h.device)
    torch.bmm(v.reshape(m, 1, n), h.view(m, n, per_group), out=out.view(m, 1, per_group))
    return out


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


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(batch, ..., L) -> (R, L) rows (a view when contiguous)."""
    return t.contiguous().view(-1, t.shape[-1])


def _problem(u, delta, A, B, C, D, delta_bias, delta_softplus) -> _Problem:
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, channels, length = u.shape
    groups, n_state = B.shape[1], B.shape[2]
    per_group = channels // groups
    A3 = A.to(compute).view(groups, per_group, n_state).transpose(1, 2).contiguous()
    return _Problem(
        u=_rows(u),
        delta=_rows(delta),
        B=_rows(B),
        C=_rows(C),
        A3=A3,
        A3_log2e=A3 * math.log2(math.e),
        D=None if D is None else D.to(compute),
        bias=None if delta_bias is None else delta_bias.to(compute),
        softplus=bool(delta_softplus),
        compute=compute,
        batch=batch, groups=groups, per_group=per_group, n_state=n_state, length=length,
    )


def _forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, out_float32, plan_overrides, grad_wanted):
    p = _problem(u, delta, A, B, C, D, delta_bias, delta_softplus)
    channels = p.groups * p.per_group
    slab = p.batch * channels * p.n_state
    overrides = {k: v for k, v in (plan_overrides or {}).items() if v is not None}
    plan = make_plan(p.length, slab, step_elements=p.batch * channels, **overrides)

    # needs_input_grad is also True under torch.no_grad(); grad_wanted says whether a backward can come.
    needs_grad = grad_wanted and any(ctx.needs_input_grad[:7])
    out_dtype = torch.float32 if (out_float32 and u.dtype != torch.float64) else u.dtype
    out = torch.empty((p.batch, channels, p.length), dtype=out_dtype, device=u.device)
    out_rows = out.view(-1, p.length)
    h_prev = None
    checkpoints: list[torch.Tensor | None] = []
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    kept_tiles: list[_Tile] = []
    keep_blocks = needs_grad and plan.keep
    work = None if keep_blocks else _workspace(plan, p, u.device, ("a", "h"))
    for t0, t1 in _tiles(p.length, plan):
        tile = _load_tile(p, t0, t1, for_backward=needs_grad and plan.keep)
        y = torch.empty_like(tile.u)
        for b0 in range(0, t1 - t0, plan.block_steps):
            b1 = min(b0 + plan.block_steps, t1 - t0)
            a, h = _block_states(tile.dt[b0:b1], tile.dtu[b0:b1], tile.B[b0:b1], p.A3_log2e, h_prev,
                                 plan.algorithm, work)
            _contract_state(tile.C[b0:b1], h, out=y[b0:b1])
            checkpoints.append(h_prev)
            if keep_blocks:
                kept.append((a, h))
            h_prev = h[-1].clone()
            del a, h
        if p.D is not None:
            y.view(t1 - t0, p.batch, channels).addcmul_(tile.u.view(t1 - t0, p.batch, channels), p.D)
        _time_major_to_rows(y, out_rows, t0)
        if needs_grad and plan.keep:
            kept_tiles.append(tile)
    last_state = h_prev.transpose(-1, -2).reshape(p.batch, channels, p.n_state)

    ctx.device_type = u.device.type
    if needs_grad:
        ctx.plan = plan
        ctx.problem = p
        ctx.dtypes = (u.dtype, delta.dtype, B.dtype, C.dtype)
        ctx.weight_dtypes = (A.dtype, None if D is None else D.dtype,
                             None if delta_bias is None else delta_bias.dtype)
        # The inputs themselves, version-checked: editing one in place before the backward raises.
        ctx.save_for_backward(u, delta, B, C)
        p.u = p.delta = p.B = p.C = None  # rebuilt from saved_tensors in the backward
        ctx.checkpoints = checkpoints
        ctx.kept = kept
        ctx.kept_tiles = kept_tiles
    return out, last_state


def _backward_block(p: _Problem, tile: _Tile, grads: dict, b0: int, b1: int, a, h, h0, carry, own_a: bool,
                    algorithm: str, gy: torch.Tensor, work: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """Gradients of one block (time steps b0:b1 of the tile); returns the carry for the block before.

    ``own_a``: ``a`` is this block's own recomputed buffer and may be overwritten.
    """
    steps = b1 - b0
    m = steps * p.batch * p.groups
    dt_b, dtu_b, B_b, C_b, gy_b = tile.dt[b0:b1], tile.dtu[b0:b1], tile.B[b0:b1], tile.C[b0:b1], gy[b0:b1]
    if grads["C"] is not None:
        h_t = h.view(m, p.n_state, p.per_group).transpose(1, 2)
        torch.bmm(gy_b.reshape(m, 1, p.per_group), h_t, out=grads["C"][b0:b1].view(m, 1, p.n_state))

    # G_t = dL/dh_t: direct term gy_t C_t, then the reverse recurrence G_t += a_{t+1} G_{t+1}.
    G = torch.mul(gy_b.unsqueeze(-2), C_b.unsqueeze(-1), out=_take(work, "G", steps))
    Gf, af = G.view(steps, -1), a.view(steps, -1)
    if carry is not None:
        Gf[-1].add_(carry)
    if steps > 1:
        Gf[-2].addcmul_(af[-1], Gf[-1])
        scan_reverse_(Gf[:-1], af[1:], algorithm)
    Gv = G.view(m, p.n_state, p.per_group)

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
    GB = _contract_state(B_b, G)
    torch.mul(GB, dt_b, out=grads["u"][b0:b1])
    gdt_b = grads["dt"][b0:b1]
    torch.mul(GB, tile.u[b0:b1], out=gdt_b)
    if grads["A"] is not None:
        grads["A"] += torch.mul(q, dt_b.unsqueeze(-2), out=_take(work, "tmp", steps)).sum((0, 1))
    gdt_b += (q.mul_(p.A3) if own_a else q * p.A3).sum(-2)
    if grads["B"] is not None:
        torch.bmm(dtu_b.reshape(m, 1, p.per_group), Gv.transpose(1, 2),
                  out=grads["B"][b0:b1].view(m, 1, p.n_state))
    return carry


def _backward(ctx, grad_y, grad_last):
    plan: ScanPlan = ctx.plan
    p: _Problem = ctx.problem
    p.u, p.delta, p.B, p.C = (_rows(t) for t in ctx.saved_tensors)
    u_dtype, delta_dtype, B_dtype, C_dtype = ctx.dtypes
    A_dtype, D_dtype, bias_dtype = ctx.weight_dtypes
    need_u, need_delta, need_A, need_B, need_C, need_D, need_bias = ctx.needs_input_grad[:7]
    channels = p.groups * p.per_group
    device, compute, length = p.u.device, p.compute, p.length
    rows_kd, rows_kn = (p.batch * channels, length), (p.batch * p.groups * p.n_state, length)

    gy_rows = None if grad_y is None else grad_y.contiguous().view(rows_kd)
    carry = None
    if grad_last is not None:  # (batch, K*Dk, N) -> the state layout (batch, K, N, Dk)
        carry = grad_last.to(compute).view(p.batch, p.groups, p.per_group, p.n_state)
        carry = carry.transpose(-1, -2).reshape(-1)
    grad_u = torch.empty(rows_kd, dtype=u_dtype, device=device) if need_u else None
    grad_delta = torch.empty(rows_kd, dtype=delta_dtype, device=device) if need_delta else None
    grad_B = torch.empty(rows_kn, dtype=B_dtype, device=device) if need_B else None
    grad_C = torch.empty(rows_kn, dtype=C_dtype, device=device) if need_C else None
    gA = torch.zeros_like(p.A3) if need_A else None
    g_bias = torch.zeros(channels, dtype=compute, device=device) if need_bias else None
    g_D = torch.zeros(channels, dtype=compute, device=device) if need_D else None

    tiles = _tiles(length, plan)
    block = len(ctx.checkpoints)
    work = _workspace(plan, p, device, ("G", "tmp") if plan.keep else ("a", "h", "G", "tmp"))
    for tile_index in range(len(tiles) - 1, -1, -1):
        t0, t1 = tiles[tile_index]
        steps = t1 - t0
        tile = ctx.kept_tiles[tile_index] if plan.keep else _load_tile(p, t0, t1, for_backward=True)
        shape4 = tile.u.shape
        if gy_rows is None:
            gy = torch.zeros(shape4, dtype=compute, device=device)
        else:
            gy = _rows_to_time_major(gy_rows, t0, t1, compute).view(shape4)
        grads = {
            "u": torch.empty(shape4, dtype=compute, device=device),
            "dt": torch.empty(shape4, dtype=compute, device=device),
            "B": torch.empty(tile.B.shape, dtype=compute, device=device) if need_B else None,
            "C": torch.empty(tile.C.shape, dtype=compute, device=device) if need_C else None,
            "A": gA,
        }
        starts = list(range(0, steps, plan.block_steps))
        for b0 in reversed(starts):
            b1 = min(b0 + plan.block_steps, steps)
            block -= 1
            h0 = ctx.checkpoints[block]
            if plan.keep:
                a, h = ctx.kept[block]
                own_a = False
            else:
                a, h = _block_states(tile.dt[b0:b1], tile.dtu[b0:b1], tile.B[b0:b1], p.A3_log2e, h0,
                                     plan.algorithm, work)
                own_a = True
            carry = _backward_block(p, tile, grads, b0, b1, a, h, h0, carry, own_a, plan.algorithm, gy, work)
            del a, h

        flat = (steps, p.batch, channels)
        gy3 = gy.view(flat)
        if need_u:
            gu3 = grads["u"].view(flat)
            if p.D is not None:
                gu3.addcmul_(gy3, p.D)
            _time_major_to_rows(gu3, grad_u, t0)
        gdelta = grads["dt"].view(flat)
        if tile.dsoftplus is not None:
            gdelta.mul_(tile.dsoftplus.view(flat))
        if need_delta:
            _time_major_to_rows(gdelta, grad_delta, t0)
        if need_bias:
            g_bias += gdelta.sum((0, 1))
        if need_D:
            g_D += (gy3 * tile.u.view(flat)).sum((0, 1))
        if need_B:
            _time_major_to_rows(grads["B"], grad_B, t0)
        if need_C:
            _time_major_to_rows(grads["C"], grad_C, t0)

    shape_u = (p.batch, channels, length)
    shape_b = (p.batch, p.groups, p.n_state, length)
    return (
        None if grad_u is None else grad_u.view(shape_u),
        None if grad_delta is None else grad_delta.view(shape_u),
        None if gA is None else gA.transpose(1, 2).reshape(channels, p.n_state).to(A_dtype),
        None if grad_B is None else grad_B.view(shape_b),
        None if grad_C is None else grad_C.view(shape_b),
        None if g_D is None else g_D.to(D_dtype),
        None if g_bias is None else g_bias.to(bias_dtype),
        None, None, None, None,
    )


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
    tile_steps: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch backend (inputs already checked). Keyword-only knobs force a plan (tests, benchmarks).

    Unlike mamba-ssm, the gradient of ``last_state`` is propagated too.
    """
    overrides = {"algorithm": algorithm, "block_steps": block_steps, "keep": keep, "tile_steps": tile_steps}
    tensors = (u, delta, A, B, C, D, delta_bias)
    grad_wanted = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    out, last_state = _SelectiveScanFunction.apply(
        *tensors, bool(delta_softplus), bool(out_float32), overrides, grad_wanted
    )
    if return_last_state:
        return out, last_state
    return out
