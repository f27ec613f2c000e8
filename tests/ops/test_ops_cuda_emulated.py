"""The real CUDA kernel source, run on the CPU by a host-thread emulator, against the float64 oracle.

``scan_host_emulator.cpp`` compiles ``csrc/selective_scan/scan_{fwd,bwd}.cuh`` with g++, runs every CUDA
thread of a block as a host thread and implements the warp shuffles with a barrier per warp (see its
header). So the kernels' own indexing, masked and 16-byte vector loads/stores, half/bf16 conversions,
segment-width shuffles, padding rows, the warp-level dB/dC reduction and the atomics are checked here,
without a GPU. Tiny shapes only (every shuffle is a thread rendezvous). What remains for the GPU tests:
the device itself (memory model, device math library, speed) and the binding's allocation/dispatch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2_cipa._csrc import build_config

from nnunetv2_cipa.ops.reference import selective_scan_reference

EMULATOR_SOURCE = Path(__file__).with_name("scan_host_emulator.cpp")
TOLERANCES = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def _cuda_include() -> Path | None:
    nvcc = shutil.which("nvcc")
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    roots += [str(Path(nvcc).resolve().parents[1])] if nvcc else []
    roots = [r for r in roots if r]
    return next((Path(r) / "include" for r in roots if (Path(r) / "include" / "cuda_fp16.h").is_file()), None)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    gxx, include = shutil.which("g++"), _cuda_include()
    if gxx is None or include is None:
        pytest.skip("g++ or the CUDA headers (cuda_fp16.h) not found: cannot build the kernel emulator")
    binary = tmp_path_factory.mktemp("emulator") / "scan_host_emulator"
    cmd = [gxx, "-std=c++20", "-O1", "-pthread", f"-I{build_config.SOURCE_DIR}", f"-isystem{include}",
           str(EMULATOR_SOURCE), "-o", str(binary)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"the kernel emulator does not compile:\n{result.stderr[-4000:]}"
    return binary


def _raw(t: torch.Tensor) -> bytes:
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.contiguous().view(torch.int16).numpy().tobytes()
    return t.contiguous().float().numpy().tobytes()


def _load(path: Path, dtype: torch.dtype, shape) -> torch.Tensor:
    if dtype == torch.float32:
        return torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(shape).copy())
    bits = torch.from_numpy(np.fromfile(path, dtype=np.int16).reshape(shape).copy())
    return bits.view(dtype).float()


def run_emulator(emulator, folder, inputs, softplus, out_float, gy, glast):
    """Forward + backward of the emulated kernels; returns out, last_state and the input gradients."""
    u, delta, A, B, C, D, bias = inputs
    batch, dim, length = u.shape
    groups, n_state = B.shape[1], B.shape[2]
    dtype = u.dtype
    out_dtype = torch.float32 if (out_float or dtype == torch.float32) else dtype
    folder.mkdir()
    meta = [batch, dim, length, n_state, groups, DTYPE_CODES[dtype], int(out_float), int(softplus),
            int(D is not None), int(bias is not None), int(glast is not None)]
    (folder / "meta.txt").write_text(" ".join(map(str, meta)))
    files = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "bias": bias, "dout": gy.to(out_dtype),
             "dlast": glast}
    for name, tensor in files.items():
        if tensor is not None:
            (folder / f"{name}.bin").write_bytes(_raw(tensor))
    try:
        result = subprocess.run([str(emulator), str(folder)], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the emulated kernel hung: a warp shuffle was reached by only part of a warp")
    assert result.returncode == 0, result.stderr
    grads = {
        "u": _load(folder / "du.bin", dtype, u.shape), "delta": _load(folder / "ddelta.bin", dtype, u.shape),
        "A": _load(folder / "dA.bin", torch.float32, A.shape),
        "B": _load(folder / "dB.bin", torch.float32, B.shape),
        "C": _load(folder / "dC.bin", torch.float32, C.shape),
        "D": _load(folder / "dD.bin", torch.float32, (dim,)) if D is not None else None,
        "delta_bias": _load(folder / "dbias.bin", torch.float32, (dim,)) if bias is not None else None,
    }
    out = _load(folder / "out.bin", out_dtype, u.shape)
    ckpt = _load(folder / "ckpt.bin", torch.float32, (batch, dim, -1, n_state))  # (..., n_chunks, N)
    return out, ckpt[:, :, -1], grads


def make_inputs(batch, groups, per_group, n_state, length, dtype, seed, use_D=True, use_bias=True):
    gen = torch.Generator().manual_seed(seed)
    channels = groups * per_group
    return [
        torch.randn(batch, channels, length, generator=gen).to(dtype),
        (0.5 * torch.rand(batch, channels, length, generator=gen)).to(dtype),
        -0.5 - 2.0 * torch.rand(channels, n_state, generator=gen),
        torch.randn(batch, groups, n_state, length, generator=gen).to(dtype),
        torch.randn(batch, groups, n_state, length, generator=gen).to(dtype),
        torch.randn(channels, generator=gen) if use_D else None,
        0.5 * torch.rand(channels, generator=gen) - 0.5 if use_bias else None,
    ]


def check(emulator, tmp_path, inputs, softplus=True, out_float=False, grad_last=True):
    dtype = inputs[0].dtype
    rtol, atol = TOLERANCES[dtype]
    rtolw, atolw = max(1e-3, rtol), max(1e-3, atol)
    out_dtype = torch.float32 if (out_float or dtype == torch.float32) else dtype
    leaves = [None if t is None else t.double().requires_grad_() for t in inputs]
    y, last = selective_scan_reference(*leaves, delta_softplus=softplus, return_last_state=True)
    gen = torch.Generator().manual_seed(1)
    gy = torch.randn(y.shape, generator=gen).to(out_dtype)
    glast = torch.randn(last.shape, generator=gen) if grad_last else None
    loss = (y * gy.double()).sum() + ((last * glast.double()).sum() if grad_last else 0.0)
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(loss, present))
    expected = {name: next(grads) if t is not None else None for name, t in zip(NAMES, leaves, strict=True)}

    out, last_emu, got = run_emulator(emulator, tmp_path / "case", inputs, softplus, out_float, gy, glast)
    torch.testing.assert_close(out.double(), y.detach(), rtol=rtol, atol=atol, msg=lambda m: f"out: {m}")
    torch.testing.assert_close(last_emu.double(), last.detach(), rtol=rtol, atol=atol,
                               msg=lambda m: f"last_state: {m}")
    scaled = {"u": (2 * rtol, 2 * atol), "delta": (5 * rtol, 10 * atol), "A": (rtolw, 5 * atolw),
              "B": (rtol, atol), "C": (rtol, atol), "D": (rtolw, atolw), "delta_bias": (rtolw, atolw)}
    for name in NAMES:
        if expected[name] is None:
            continue
        rtol_g, atol_g = scaled[name]
        torch.testing.assert_close(got[name].double(), expected[name], rtol=rtol_g, atol=atol_g,
                                   msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.slow
@pytest.mark.parametrize("length", (1, 5, 8, 9, 17, 64, 255, 257, 600))
def test_emulated_kernel_fp32_across_lane_and_chunk_boundaries(emulator, tmp_path, length):
    check(emulator, tmp_path, make_inputs(2, 2, 3, 4, length, torch.float32, seed=length))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=("float16", "bfloat16"))
@pytest.mark.parametrize("length, out_float", [(264, False), (259, True)])  # vector / scalar 16-bit paths
def test_emulated_kernel_16bit(emulator, tmp_path, dtype, length, out_float):
    check(emulator, tmp_path, make_inputs(1, 2, 2, 4, length, dtype, seed=3), out_float=out_float)


@pytest.mark.slow
@pytest.mark.parametrize("n_state", (1, 7, 16))
def test_emulated_kernel_state_sizes(emulator, tmp_path, n_state):
    check(emulator, tmp_path, make_inputs(1, 1, 2, n_state, 40, torch.float32, seed=n_state))


@pytest.mark.slow
@pytest.mark.parametrize("batch, groups, per_group, length", [
    (3, 1, 32, 16),  # 2 lanes: 16 channels per warp, all in one group -> warp-level dB/dC sums
    (2, 4, 8, 16),  # groups change inside a warp -> per-channel atomics
    (2, 1, 70, 12),  # 70 channels: padding rows in the second block
])
def test_emulated_kernel_many_short_sequences(emulator, tmp_path, batch, groups, per_group, length):
    check(emulator, tmp_path, make_inputs(batch, groups, per_group, 4, length, torch.float32, seed=batch))


@pytest.mark.slow
def test_emulated_kernel_without_optional_arguments(emulator, tmp_path):
    inputs = make_inputs(2, 2, 2, 4, 100, torch.float32, seed=9, use_D=False, use_bias=False)
    inputs[1] = inputs[1] + 0.1  # positive dt without softplus
    check(emulator, tmp_path, inputs, softplus=False, grad_last=False)
