"""GPU tests of our selective-scan CUDA kernel against the float64 loop oracle.

Skipped without a CUDA device or when the extension neither imports nor compiles (the loader's reason
is shown). What they cover (what mamba-ssm's own kernel tests check, in state-spaces/mamba, plus what
our kernel's layout adds):

* every output and gradient (out, last_state, du, ddelta, dA, dB, dC, dD, ddelta_bias) for fp32 / fp16 /
  bf16 inputs with mamba-ssm's tolerance table, against ``selective_scan_reference`` run in float64 on
  the same (rounded) input values;
* lengths across every lane / chunk boundary of the kernel (a sequence is scanned by up to 32 lanes of
  8 steps, chunks of 256 steps) and the issue's list, up to 16384;
* N in {1, 4, 16} (the compiled specialisations and a padded one), K in {1, 2, 4}, every optional
  argument on and off, the gradient of the final state, fp32 output for 16-bit inputs;
* the many-short-sequence DCIM shapes (several channels per warp, the warp-level dB/dC reduction and
  padding rows), non-contiguous inputs, no NaN in fp16/bf16 at L = 16384, repeatability, dispatch.
"""

from __future__ import annotations

import sys

import pytest
import torch

from nnunetv2_cipa.ops import cuda_backend, selective_scan
from nnunetv2_cipa.ops.reference import selective_scan_reference

pytestmark = pytest.mark.gpu
dispatch_module = sys.modules["nnunetv2_cipa.ops.selective_scan"]

# mamba-ssm's tolerances (rtol, atol) for out / last_state / dB / dC; the other gradients are scaled below.
TOLERANCES = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}
LENGTHS = (1, 2, 5, 63, 64, 65, 127, 128, 129, 372, 784, 1134, 2047, 2048, 2049, 4097)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


@pytest.fixture(scope="module", autouse=True)
def extension():
    module = cuda_backend.load_extension()
    if module is None:
        pytest.skip(f"selective-scan CUDA extension unavailable: {cuda_backend.unavailable_reason()}")
    return module


def make_inputs(batch, groups, per_group, n_state, length, dtype, seed=0, use_D=True, use_bias=True):
    """mamba-ssm's test initialisation: A = -0.5 rand, delta = 0.5 rand, bias = 0.5 rand, randn elsewhere."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    channels = groups * per_group

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device="cuda")

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device="cuda")

    return [
        randn(batch, channels, length).to(dtype),
        (0.5 * rand(batch, channels, length)).to(dtype),
        -0.5 * rand(channels, n_state),
        randn(batch, groups, n_state, length).to(dtype),
        randn(batch, groups, n_state, length).to(dtype),
        randn(channels) if use_D else None,
        0.5 * rand(channels) if use_bias else None,
    ]


def run(fn, inputs, softplus, grad_last=True, **kwargs):
    """Output, final state and every input gradient for a fixed upstream gradient (float64 for fn=oracle)."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    out, last = fn(*leaves, delta_softplus=softplus, return_last_state=True, **kwargs)
    gen = torch.Generator(device="cuda").manual_seed(1)
    g_out = torch.randn(out.shape, generator=gen, device="cuda").to(out.dtype)
    loss = (out * g_out).sum()
    if grad_last:
        g_last = torch.randn(last.shape, generator=gen, device="cuda").to(last.dtype)
        loss = loss + (last * g_last).sum()
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(loss, present))
    named = {name: next(grads) if t is not None else None for name, t in zip(NAMES, leaves, strict=True)}
    return out, last, named


def kernel(inputs, softplus, grad_last=True, out_float32=False):
    return run(cuda_backend.selective_scan_cuda, inputs, softplus, grad_last, out_float32=out_float32)


def assert_close(name, actual, expected, rtol, atol):
    assert actual is not None and expected is not None, name
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.double(), expected.double()
    assert torch.isfinite(a).all(), f"{name}: non-finite values"
    if not torch.allclose(a, e, rtol=rtol, atol=atol):
        err = (a - e).abs()
        worst = int(torch.argmax(err - rtol * e.abs()))
        raise AssertionError(f"{name}: max |diff| {err.max().item():.3e} (rtol {rtol}, atol {atol}); "
                             f"worst {a.flatten()[worst].item():.6g} vs {e.flatten()[worst].item():.6g}")


def compare(inputs, softplus=True, grad_last=True, out_float32=False):
    dtype = inputs[0].dtype
    rtol, atol = TOLERANCES[dtype]
    rtolw, atolw = max(1e-3, rtol), max(1e-3, atol)
    out, last, grads = kernel(inputs, softplus, grad_last, out_float32)
    ref_out, ref_last, ref_grads = _oracle_matching(inputs, softplus, grad_last, out)
    expected_dtype = torch.float32 if (out_float32 or dtype == torch.float32) else dtype
    assert out.dtype == expected_dtype and last.dtype == torch.float32
    assert_close("out", out, ref_out, rtol, atol)
    assert_close("last_state", last, ref_last, rtol, atol)
    scaled = {"u": (2 * rtol, 2 * atol), "delta": (5 * rtol, 10 * atol), "A": (rtolw, 5 * atolw),
              "B": (rtol, atol), "C": (rtol, atol), "D": (rtolw, atolw), "delta_bias": (rtolw, atolw)}
    for name in NAMES:
        if inputs[NAMES.index(name)] is None:
            assert grads[name] is None
            continue
        assert grads[name].dtype == inputs[NAMES.index(name)].dtype, name
        assert_close(f"d{name}", grads[name], ref_grads[name], *scaled[name])


def _oracle_matching(inputs, softplus, grad_last, kernel_out):
    """The oracle with the kernel's upstream gradients (same generator, rounded to the kernel's dtypes)."""
    as64 = [None if t is None else t.detach().double().requires_grad_() for t in inputs]
    out, last = selective_scan_reference(*as64, delta_softplus=softplus, return_last_state=True)
    gen = torch.Generator(device="cuda").manual_seed(1)
    g_out = torch.randn(kernel_out.shape, generator=gen, device="cuda").to(kernel_out.dtype).double()
    loss = (out * g_out).sum()
    if grad_last:
        g_last = torch.randn(last.shape, generator=gen, device="cuda").double()
        loss = loss + (last * g_last).sum()
    present = [t for t in as64 if t is not None]
    grads = iter(torch.autograd.grad(loss, present))
    named = {name: next(grads) if t is not None else None for name, t in zip(NAMES, as64, strict=True)}
    return out.detach(), last.detach(), named


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("length", LENGTHS)
def test_kernel_matches_float64_reference_across_lengths(length, dtype):
    compare(make_inputs(2, 2, 4, 16, length, dtype, seed=length))


@pytest.mark.parametrize("groups", (1, 2, 4))
@pytest.mark.parametrize("n_state", (1, 2, 4, 7, 16))
def test_kernel_matches_reference_for_every_state_size_and_group_count(n_state, groups):
    compare(make_inputs(2, groups, 3, n_state, 600, torch.float32, seed=n_state * 10 + groups))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("option", ("no_D", "no_bias", "no_softplus", "no_last_state_grad", "out_float32"))
def test_kernel_optional_arguments_on_and_off(option, dtype):
    inputs = make_inputs(2, 2, 4, 4, 300, dtype, seed=7, use_D=option != "no_D", use_bias=option != "no_bias")
    compare(inputs, softplus=option != "no_softplus", grad_last=option != "no_last_state_grad",
            out_float32=option == "out_float32")


@pytest.mark.parametrize(
    "batch, groups, per_group, length",
    [
        (1024, 1, 32, 16),  # DCIM shape: 2 lanes per sequence, warps inside one group (warp-level sums)
        (256, 4, 8, 16),  # groups change inside a warp (per-channel atomics)
        (64, 1, 5, 16),  # padding rows in the last block
        (32, 4, 24, 8),  # one lane per sequence
        (16, 2, 16, 33),  # 8 lanes, ragged tail
    ],
)
def test_kernel_many_short_sequences(batch, groups, per_group, length):
    compare(make_inputs(batch, groups, per_group, 16, length, torch.float32, seed=batch + length))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_kernel_long_sequence_matches_and_stays_finite(dtype):
    """L = 16384 (the SS2D stage-0 length): 64 chunks carried through the checkpoints, no NaN in 16 bit."""
    compare(make_inputs(1, 2, 2, 16, 16384, dtype, seed=3))


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=("float16", "bfloat16"))
def test_kernel_16bit_stress_inputs_stay_finite(dtype):
    """Large dt and strongly negative A at L = 16384: every output and gradient stays finite."""
    inputs = make_inputs(2, 4, 8, 16, 16384, dtype, seed=5)
    inputs[1] = (3.0 * torch.randn_like(inputs[1].float()) + 2.0).to(dtype)
    inputs[2] = inputs[2] * 32.0
    out, last, grads = kernel(inputs, softplus=True)
    for name, value in {"out": out, "last_state": last, **grads}.items():
        assert torch.isfinite(value.float()).all(), f"{name} has NaN/inf"


def test_kernel_accepts_non_contiguous_inputs():
    base = make_inputs(2, 2, 4, 4, 130, torch.float32, seed=11)
    u_t = base[0].transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert not u_t.is_contiguous()
    inputs = [u_t, *base[1:]]
    out, _, grads = kernel(inputs, softplus=True)
    ref_out, _, ref_grads = kernel(base, softplus=True)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    torch.testing.assert_close(grads["u"], ref_grads["u"], rtol=0, atol=0)


def test_kernel_backward_is_repeatable_within_rounding():
    inputs = make_inputs(4, 2, 64, 16, 16, torch.float32, seed=13)
    _, _, first = kernel(inputs, softplus=True)
    _, _, second = kernel(inputs, softplus=True)
    for name in NAMES:
        torch.testing.assert_close(first[name], second[name], rtol=1e-5, atol=1e-6)  # atomics: order varies


def test_kernel_rejects_unsupported_state_size_clearly(extension):
    inputs = make_inputs(1, 1, 2, 17, 8, torch.float32)
    with pytest.raises(ValueError, match="N = 17"):
        cuda_backend.selective_scan_cuda(*inputs)
    with pytest.raises(RuntimeError, match="N = 17 is outside the compiled range"):  # the binding checks too
        extension.fwd(*inputs, False, False)


def test_auto_dispatch_runs_the_kernel_on_cuda_and_agrees_with_torch(monkeypatch):
    calls = []
    real = cuda_backend.selective_scan_cuda

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(cuda_backend, "selective_scan_cuda", spy)
    monkeypatch.delenv(dispatch_module.ENV_BACKEND, raising=False)
    inputs = make_inputs(2, 4, 8, 16, 200, torch.float32, seed=17)
    y_auto, last_auto = selective_scan(*inputs, delta_softplus=True, return_last_state=True)
    assert len(calls) == 1
    y_torch, last_torch = selective_scan(*inputs, delta_softplus=True, return_last_state=True,
                                         backend="torch")
    torch.testing.assert_close(y_auto, y_torch, rtol=6e-4, atol=2e-3)
    torch.testing.assert_close(last_auto, last_torch, rtol=6e-4, atol=2e-3)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_kernel_agrees_with_mamba_ssm_when_installed(dtype):
    """Second CUDA reference: mamba-ssm's kernel on the same grouped inputs (it has no final-state grad)."""
    from nnunetv2_cipa.ops import mamba_backend

    if not mamba_backend.available():
        pytest.skip("mamba-ssm's selective_scan_cuda is not installed")
    rtol, atol = TOLERANCES[dtype]
    inputs = make_inputs(2, 4, 16, 16, 1024, dtype, seed=19)
    out, last, grads = kernel(inputs, softplus=True, grad_last=False)
    ref_out, ref_last, ref_grads = run(mamba_backend.selective_scan_mamba, inputs, True, grad_last=False)
    assert_close("out vs mamba", out.float(), ref_out.float(), rtol, atol)
    assert_close("last_state vs mamba", last, ref_last.float(), rtol, atol)
    for name in NAMES:
        assert_close(f"d{name} vs mamba", grads[name].float(), ref_grads[name].float(), 5 * rtol, 10 * atol)
