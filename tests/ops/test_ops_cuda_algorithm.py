"""A NumPy model of our CUDA kernel's algorithm, checked against the float64 oracle on the CPU.

Why: no GPU is needed to find a wrong index in the *algorithm* of ``csrc/selective_scan/scan_fwd.cuh``
and ``scan_bwd.cuh``. This model follows the kernels step by step with the same decomposition: a
sequence is split into chunks of ``lanes * ITEMS`` steps (``lanes`` threads of ``ITEMS`` steps each),
every thread composes the affine maps of its items, the lanes run the same Hillis-Steele segmented
scans (forward for the state, reverse for the adjoint ``g_t = a_t gh_t``), the state is carried between
chunks and checkpointed at chunk ends, the backward walks chunks last to first recomputing the states
from the checkpoints and seeds the adjoint with the gradient of the final state. Padding steps past the
end are identity maps. It checks the maths and the bookkeeping (shifts, exclusive prefixes, carries,
padding); CUDA-level details (shuffles, vector loads, atomics) are left to the GPU tests in
``test_ops_cuda_kernel.py``. Keep it in step with the kernels when their algorithm changes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunetv2_cipa.ops.reference import selective_scan_reference

ITEMS = 8  # kScanItems
MAX_LANES = 32  # one warp


def scan_lanes_for_length(length: int) -> int:
    """Mirror of scan_lanes_for_length in selective_scan.h."""
    needed = -(-length // ITEMS)
    lanes = 1
    while lanes < needed and lanes < MAX_LANES:
        lanes <<= 1
    return lanes


def segmented_scan_forward(a, b):
    """Inclusive Hillis-Steele scan over the last (lane) axis: lane j <- maps of lanes 0..j (later last)."""
    a, b = a.copy(), b.copy()
    width, offset = a.shape[-1], 1
    while offset < width:
        prev_a = np.concatenate([np.ones_like(a[..., :offset]), a[..., :-offset]], axis=-1)
        prev_b = np.concatenate([np.zeros_like(b[..., :offset]), b[..., :-offset]], axis=-1)
        b = a * prev_b + b
        a = a * prev_a
        offset <<= 1
    return a, b


def segmented_scan_reverse(a, b):
    """Reverse scan: lane j <- maps of lanes j..end, the map of lane j+1 applied first."""
    a, b = a.copy(), b.copy()
    width, offset = a.shape[-1], 1
    while offset < width:
        next_a = np.concatenate([a[..., offset:], np.ones_like(a[..., :offset])], axis=-1)
        next_b = np.concatenate([b[..., offset:], np.zeros_like(b[..., :offset])], axis=-1)
        b = a * next_b + b
        a = a * next_a
        offset <<= 1
    return a, b


def softplus(v):
    return np.where(v <= 20.0, np.log1p(np.exp(np.minimum(v, 20.0))), v)


def softplus_grad(v):
    return np.where(v <= 20.0, 1.0 / (1.0 + np.exp(-np.minimum(v, 20.0))), 1.0)


class KernelModel:
    """Forward and backward of the kernels on NumPy arrays (batch, dim, chunks, lanes, ITEMS)."""

    def __init__(self, u, delta, A, B, C, D, bias, softplus_on):
        self.batch, self.dim, self.L = u.shape
        self.groups, self.N = B.shape[1], B.shape[2]
        self.lanes = scan_lanes_for_length(self.L)
        self.chunk_len = self.lanes * ITEMS
        self.n_chunks = -(-self.L // self.chunk_len)
        self.padded = self.n_chunks * self.chunk_len
        per_group = self.dim // self.groups
        self.group_of = np.arange(self.dim) // per_group
        self.valid = self._blocks(np.ones((1, 1, self.L)))  # 1 for real steps, 0 for padding
        self.u = self._blocks(u)
        raw = self._blocks(delta) + (0.0 if bias is None else bias[None, :, None, None, None])
        self.raw = raw
        dt = softplus(raw) if softplus_on else raw
        self.dt = dt * self.valid  # dt = 0 past the end: the identity map
        self.dt_scale = softplus_grad(raw) if softplus_on else np.ones_like(raw)
        self.A, self.D, self.softplus_on = A, D, softplus_on
        self.has_D, self.has_bias = D is not None, bias is not None
        self.B = self._blocks(B[:, self.group_of])  # (batch, dim, N, ...) via the channel's group
        self.C = self._blocks(C[:, self.group_of])

    def _blocks(self, x):
        """(..., L) -> (..., chunks, lanes, ITEMS), zero-padded past the end (what load_items returns)."""
        pad = np.zeros((*x.shape[:-1], self.padded - x.shape[-1]))
        return np.concatenate([x, pad], axis=-1).reshape(*x.shape[:-1], self.n_chunks, self.lanes, ITEMS)

    def _unblock(self, x):
        return x.reshape(*x.shape[:-3], self.padded)[..., : self.L]

    def _states(self, chunk, n, h_start):
        """Recompute h of every item of a chunk from the state before it (both kernels do this)."""
        dt, u = self.dt[:, :, chunk], self.u[:, :, chunk]
        a = np.exp(dt * self.A[None, :, n, None, None])
        x = dt * u * self.B[:, :, n, chunk]
        agg_a, agg_b = np.ones(a.shape[:-1]), np.zeros(a.shape[:-1])
        for i in range(ITEMS):
            agg_b = a[..., i] * agg_b + x[..., i]
            agg_a = agg_a * a[..., i]
        inc_a, inc_b = segmented_scan_forward(agg_a, agg_b)
        prev_a = np.concatenate([np.ones_like(inc_a[..., :1]), inc_a[..., :-1]], axis=-1)  # exclusive
        prev_b = np.concatenate([np.zeros_like(inc_b[..., :1]), inc_b[..., :-1]], axis=-1)
        h_in = prev_a * h_start[..., None] + prev_b
        h = np.empty_like(a)
        run = h_in
        for i in range(ITEMS):
            run = a[..., i] * run + x[..., i]
            h[..., i] = run
        carry = inc_a[..., -1] * h_start + inc_b[..., -1]
        return a, h_in, h, carry

    def forward(self):
        y = self.D[None, :, None, None, None] * self.u if self.has_D else np.zeros_like(self.u)
        ckpt = np.zeros((self.batch, self.dim, self.n_chunks, self.N))
        carry = np.zeros((self.batch, self.dim, self.N))
        for chunk in range(self.n_chunks):
            for n in range(self.N):
                _, _, h, carry[..., n] = self._states(chunk, n, carry[..., n])
                y[:, :, chunk] += self.C[:, :, n, chunk] * h
            ckpt[:, :, chunk] = carry
        self.ckpt = ckpt
        return self._unblock(y), ckpt[:, :, -1]

    def backward(self, gy, glast):
        gy = self._blocks(gy) * self.valid
        du = self.D[None, :, None, None, None] * gy if self.has_D else np.zeros_like(gy)
        ddt = np.zeros_like(gy)
        dA = np.zeros((self.dim, self.N))
        dB = np.zeros_like(self.B)
        dC = np.zeros_like(self.C)
        g_carry = glast.copy() if glast is not None else np.zeros((self.batch, self.dim, self.N))
        for chunk in range(self.n_chunks - 1, -1, -1):
            for n in range(self.N):
                h_start = self.ckpt[:, :, chunk - 1, n] if chunk > 0 else np.zeros((self.batch, self.dim))
                a, h_in, h, _ = self._states(chunk, n, h_start)
                Cv, Bv = self.C[:, :, n, chunk], self.B[:, :, n, chunk]
                g_chunk = gy[:, :, chunk]
                rev_a, rev_b = np.ones(a.shape[:-1]), np.zeros(a.shape[:-1])
                for i in range(ITEMS - 1, -1, -1):
                    rev_b = a[..., i] * (g_chunk[..., i] * Cv[..., i] + rev_b)
                    rev_a = rev_a * a[..., i]
                inc_a, inc_b = segmented_scan_reverse(rev_a, rev_b)
                next_a = np.concatenate([inc_a[..., 1:], np.ones_like(inc_a[..., :1])], axis=-1)
                next_b = np.concatenate([inc_b[..., 1:], np.zeros_like(inc_b[..., :1])], axis=-1)
                g = next_a * g_carry[..., n, None] + next_b
                g_carry[..., n] = inc_a[..., 0] * g_carry[..., n] + inc_b[..., 0]
                dt, u = self.dt[:, :, chunk], self.u[:, :, chunk]
                for i in range(ITEMS - 1, -1, -1):
                    gh = g_chunk[..., i] * Cv[..., i] + g
                    h_prev = h[..., i - 1] if i > 0 else h_in
                    ah = a[..., i] * h_prev
                    du[:, :, chunk, :, i] += gh * dt[..., i] * Bv[..., i]
                    ddt[:, :, chunk, :, i] += gh * (ah * self.A[None, :, n, None] + u[..., i] * Bv[..., i])
                    dA[:, n] += (gh * dt[..., i] * ah).sum(axis=(0, 2))
                    dB[:, :, n, chunk, :, i] = gh * dt[..., i] * u[..., i]
                    dC[:, :, n, chunk, :, i] = g_chunk[..., i] * h[..., i]
                    g = a[..., i] * gh
        ddelta = ddt * self.dt_scale * self.valid
        dB_group = np.zeros((self.batch, self.groups, self.N, self.L))
        dC_group = np.zeros_like(dB_group)
        np.add.at(dB_group, (slice(None), self.group_of), self._unblock(dB))  # the kernel's atomics
        np.add.at(dC_group, (slice(None), self.group_of), self._unblock(dC))
        return {
            "u": self._unblock(du), "delta": self._unblock(ddelta), "A": dA, "B": dB_group, "C": dC_group,
            "D": (self._unblock(gy) * self._unblock(self.u)).sum(axis=(0, 2)) if self.has_D else None,
            "delta_bias": self._unblock(ddelta).sum(axis=(0, 2)) if self.has_bias else None,
        }


NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def _inputs(batch, groups, per_group, n_state, length, seed, use_D=True, use_bias=True):
    gen = torch.Generator().manual_seed(seed)
    channels = groups * per_group
    return [
        torch.randn(batch, channels, length, generator=gen, dtype=torch.float64),
        0.5 * torch.randn(batch, channels, length, generator=gen, dtype=torch.float64),
        -torch.rand(channels, n_state, generator=gen, dtype=torch.float64) * 2.0,
        torch.randn(batch, groups, n_state, length, generator=gen, dtype=torch.float64),
        torch.randn(batch, groups, n_state, length, generator=gen, dtype=torch.float64),
        torch.randn(channels, generator=gen, dtype=torch.float64) if use_D else None,
        torch.rand(channels, generator=gen, dtype=torch.float64) - 1.0 if use_bias else None,
    ]


@pytest.mark.parametrize("length", (1, 5, 8, 9, 16, 17, 100, 255, 256, 257, 600))
@pytest.mark.parametrize("n_state, groups, options", [
    (4, 2, (True, True, True, True)),
    (1, 1, (False, True, True, False)),
    (3, 4, (True, False, False, True)),
])
def test_kernel_algorithm_matches_float64_reference(length, n_state, groups, options):
    use_D, use_bias, softplus_on, grad_last = options
    inputs = _inputs(2, groups, 3, n_state, length, seed=length + n_state, use_D=use_D, use_bias=use_bias)
    leaves = [None if t is None else t.clone().requires_grad_() for t in inputs]
    y, last = selective_scan_reference(*leaves, delta_softplus=softplus_on, return_last_state=True)
    gen = torch.Generator().manual_seed(1)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    glast = torch.randn(last.shape, generator=gen, dtype=torch.float64) if grad_last else None
    loss = (y * gy).sum() + ((last * glast).sum() if grad_last else 0.0)
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(loss, present))
    expected = {name: next(grads) if t is not None else None for name, t in zip(NAMES, leaves, strict=True)}

    arrays = [None if t is None else t.numpy() for t in inputs]
    model = KernelModel(*arrays, softplus_on)
    y_model, last_model = model.forward()
    np.testing.assert_allclose(y_model, y.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(last_model, last.detach().numpy(), rtol=1e-10, atol=1e-10)
    got = model.backward(gy.numpy(), None if glast is None else glast.numpy())
    for name in NAMES:
        if expected[name] is None:
            assert got[name] is None, name
        else:
            np.testing.assert_allclose(got[name], expected[name].numpy(), rtol=1e-9, atol=1e-9, err_msg=name)


def test_lane_choice_matches_the_kernel_layout():
    """Short sequences get few lanes (many channels per block), long ones a full warp and 256-step chunks."""
    assert [scan_lanes_for_length(n) for n in (1, 8, 9, 16, 17, 64, 256, 257, 16384)] == [
        1, 1, 2, 2, 4, 8, 32, 32, 32]


PROBE_SOURCE = r"""
#include <cstdio>
#include <cstdlib>
#include "selective_scan.h"
int main(int argc, char** argv) {
    std::printf("%d\n", nnunetv2_cipa::kScanItems);
    for (int i = 1; i < argc; ++i) {
        std::printf("%d\n", nnunetv2_cipa::scan_lanes_for_length(std::atoll(argv[i])));
    }
    return 0;
}
"""
# selective_scan.h declares its launchers with two CUDA runtime types; these stand-ins are all it needs
CUDA_RUNTIME_STUB = "struct CUstream_st;\ntypedef CUstream_st* cudaStream_t;\ntypedef int cudaError_t;\n"


def test_model_constants_match_the_kernel_header(tmp_path):
    """The model mirrors selective_scan.h: its items per thread and lane rule, compiled from the header."""
    import shutil
    import subprocess

    from nnunetv2_cipa._csrc import build_config

    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: cannot compile the header probe")
    (tmp_path / "cuda_runtime_api.h").write_text(CUDA_RUNTIME_STUB)
    (tmp_path / "probe.cpp").write_text(PROBE_SOURCE)
    binary = tmp_path / "probe"
    build = subprocess.run(
        [gxx, "-std=c++17", f"-I{build_config.SOURCE_DIR}", f"-I{tmp_path}", str(tmp_path / "probe.cpp"),
         "-o", str(binary)], capture_output=True, text=True, timeout=120,
    )
    assert build.returncode == 0, f"selective_scan.h does not compile on its own:\n{build.stderr[-3000:]}"
    lengths = [*range(1, 300), 511, 512, 513, 2047, 2048, 2049, 16384, 1 << 20]
    out = subprocess.run([str(binary), *map(str, lengths)], capture_output=True, text=True, check=True)
    items, *lanes = (int(v) for v in out.stdout.split())
    assert items == ITEMS
    assert lanes == [scan_lanes_for_length(n) for n in lengths]
