"""CPU tests of nnunetv2_cipa.ops.selective_scan: torch backend vs the float64 loop oracle,
gradcheck, chunk/block boundaries, dtypes, stress inputs, dispatch and argument errors."""

from __future__ import annotations

import itertools
import logging
import sys

import pytest
import torch

from nnunetv2_cipa.ops import choose_scan_backend, selective_scan
from nnunetv2_cipa.ops.reference import selective_scan_reference
from nnunetv2_cipa.ops.torch_scan import TILE_ELEMENTS, make_plan, selective_scan_torch

scan_module = sys.modules["nnunetv2_cipa.ops.selective_scan"]

# mamba-ssm's test tolerances (rtol, atol) for out / last_state and the variable B, C grads.
TOLERANCES = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}
NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def make_inputs(batch, groups, per_group, n_state, length, dtype=torch.float64, seed=0,
                use_D=True, use_bias=True, stress=False, softplus=True):
    """VMamba-like initialisation (A = -(1..N), small dt); ``stress`` gives dt up to ~7, A to -16.

    Without softplus, delta and bias are made positive so that dt > 0 (a decaying recurrence)."""
    gen = torch.Generator().manual_seed(seed)
    channels = groups * per_group

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    u = randn(batch, channels, length)
    if stress:
        delta = 1.0 + 2.0 * randn(batch, channels, length)
        A = -(torch.rand(channels, n_state, generator=gen, dtype=torch.float64) * 15.0 + 1.0)
    else:
        delta = 0.5 * randn(batch, channels, length)
        A = -torch.arange(1, n_state + 1, dtype=torch.float64).repeat(channels, 1) * (
            0.1 + torch.rand(channels, 1, generator=gen, dtype=torch.float64))
    B = randn(batch, groups, n_state, length)
    C = randn(batch, groups, n_state, length)
    D = randn(channels) if use_D else None
    bias = (torch.rand(channels, generator=gen, dtype=torch.float64) - 2.0) if use_bias else None
    if not softplus:
        delta = delta.abs()
        bias = None if bias is None else bias.abs()
    weight_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    out = [u.to(dtype), delta.to(dtype), A.to(weight_dtype), B.to(dtype), C.to(dtype),
           None if D is None else D.to(weight_dtype), None if bias is None else bias.to(weight_dtype)]
    return out


def run_with_grads(fn, inputs, softplus, grad_seed=1, **kwargs):
    """Output, last state and the gradients of every tensor input for a fixed random upstream."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    y, last = fn(*leaves, delta_softplus=softplus, return_last_state=True, **kwargs)
    gen = torch.Generator().manual_seed(grad_seed)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    glast = torch.randn(last.shape, generator=gen, dtype=torch.float64).to(last.dtype)
    loss = (y.to(torch.float64) * gy.to(torch.float64)).sum() + (last.double() * glast.double()).sum()
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(loss, present))
    return y, last, [None if t is None else next(grads) for t in leaves]


def assert_close(name, actual, expected, rtol, atol):
    actual = actual.to(torch.float64)
    expected = expected.to(torch.float64)
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    err = (actual - expected).abs()
    bound = atol + rtol * expected.abs()
    worst = (err - bound).max().item()
    assert worst <= 0, f"{name}: max abs error {err.max().item():.3e} exceeds rtol={rtol}, atol={atol}"


# Every length across the chunk/block boundaries, each with a different (N, K, options) combination
# so that every N, K and each optional argument on/off is covered without a full cross product.
LENGTHS = (1, 2, 5, 63, 64, 65, 127, 128, 129, 372, 784, 1134, 4097)
COMBOS = list(itertools.product((1, 4, 16), (1, 2, 4), (True, False), (True, False), (True, False)))


@pytest.mark.parametrize("length", LENGTHS)
def test_torch_matches_reference_float64(length):
    index = LENGTHS.index(length)
    n_state, groups, use_D, use_bias, softplus = COMBOS[(7 * index) % len(COMBOS)]
    per_group = 2 if length > 1000 else 3
    inputs = make_inputs(1 if length > 1000 else 2, groups, per_group, n_state, length,
                         use_D=use_D, use_bias=use_bias, softplus=softplus)
    ref = run_with_grads(selective_scan_reference, inputs, softplus)
    plans = [{}, {"algorithm": "seq"}, {"algorithm": "chunked"},
             {"algorithm": "seq", "block_steps": 37, "keep": False},
             {"algorithm": "chunked", "block_steps": 300, "keep": False},
             {"algorithm": "seq", "block_steps": 5, "keep": False, "tile_steps": 13},
             {"algorithm": "chunked", "block_steps": 64, "keep": True, "tile_steps": 128}]
    for plan in plans:
        y, last, grads = run_with_grads(selective_scan_torch, inputs, softplus, **plan)
        assert_close(f"out {plan}", y, ref[0], 1e-10, 1e-10)
        assert_close(f"last_state {plan}", last, ref[1], 1e-10, 1e-10)
        for name, g, g_ref in zip(NAMES, grads, ref[2], strict=True):
            if g_ref is not None:
                assert_close(f"d{name} {plan}", g, g_ref, 1e-9, 1e-9)


@pytest.mark.parametrize("n_state,groups", [(1, 1), (4, 2), (16, 4)])
@pytest.mark.parametrize("length", [129, 1134])
def test_fp32_within_mamba_tolerances_of_float64_reference(n_state, groups, length):
    inputs64 = make_inputs(2, groups, 4, n_state, length)
    ref = run_with_grads(selective_scan_reference, inputs64, True)
    inputs32 = [None if t is None else t.float() for t in inputs64]
    y, last, grads = run_with_grads(selective_scan, inputs32, True)
    assert y.dtype == torch.float32 and last.dtype == torch.float32
    rtol, atol = TOLERANCES[torch.float32]
    assert_close("out", y, ref[0], rtol, atol)
    assert_close("last_state", last, ref[1], rtol, atol)
    scale = {"u": 2, "delta": 5, "A": 1, "B": 1, "C": 1, "D": 1, "delta_bias": 1}
    ascale = {"u": 2, "delta": 10, "A": 5, "B": 1, "C": 1, "D": 1, "delta_bias": 1}
    for name, g, g_ref in zip(NAMES, grads, ref[2], strict=True):
        weight = name in ("A", "D", "delta_bias")
        r, a = (max(1e-3, rtol), max(1e-3, atol)) if weight else (rtol, atol)
        assert g.dtype == inputs32[NAMES.index(name)].dtype
        assert_close(f"d{name}", g, g_ref, r * scale[name], a * ascale[name])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("out_float32", [False, True])
def test_half_inputs_keep_fp32_state(dtype, out_float32):
    inputs64 = make_inputs(2, 2, 4, 16, 300)
    inputs = [None if t is None else (t.to(dtype) if i in (0, 1, 3, 4) else t.float())
              for i, t in enumerate(inputs64)]
    # The oracle sees the same rounded inputs, in float64.
    ref = run_with_grads(selective_scan_reference, [None if t is None else t.double() for t in inputs], True)
    y, last, grads = run_with_grads(selective_scan, inputs, True, out_float32=out_float32)
    assert y.dtype == (torch.float32 if out_float32 else dtype)
    assert last.dtype == torch.float32
    rtol, atol = TOLERANCES[dtype]
    assert_close("out", y, ref[0], rtol, atol)
    assert_close("last_state", last, ref[1], rtol, atol)
    for name, g, g_ref, t in zip(NAMES, grads, ref[2], inputs, strict=True):
        assert g.dtype == t.dtype, f"d{name} dtype {g.dtype} != {t.dtype}"
        # Gradients go through the rounding of their own dtype: scale the tolerance by magnitude.
        assert_close(f"d{name}", g, g_ref, 2 * rtol, 2 * atol * max(1.0, g_ref.abs().max().item() / 10))


@pytest.mark.parametrize("plan", [{"algorithm": "seq"}, {"algorithm": "chunked"},
                                  {"algorithm": "seq", "block_steps": 3, "keep": False},
                                  {"algorithm": "chunked", "block_steps": 9, "keep": False},
                                  {"algorithm": "seq", "block_steps": 4, "keep": True},
                                  {"algorithm": "seq", "block_steps": 2, "keep": False, "tile_steps": 5},
                                  {"algorithm": "seq", "block_steps": 3, "keep": True, "tile_steps": 6}])
def test_gradcheck_every_argument(plan):
    inputs = [t.requires_grad_() for t in make_inputs(2, 2, 2, 3, 11, seed=3)]

    def fn(*args):
        y, last = selective_scan_torch(*args, delta_softplus=True, return_last_state=True, **plan)
        return y, last

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_without_optional_arguments_and_softplus():
    inputs = make_inputs(1, 1, 2, 2, 7, seed=4, use_D=False, use_bias=False, softplus=False)[:5]
    inputs = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a), inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("n_state", [1, 16])
def test_stress_inputs_stay_finite(n_state):
    inputs = [None if t is None else t.float()
              for t in make_inputs(1, 2, 4, n_state, 4097, stress=True, seed=5)]
    y, last, grads = run_with_grads(selective_scan, inputs, True)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    for name, g in zip(NAMES, grads, strict=True):
        assert torch.isfinite(g).all(), f"d{name} not finite"


def test_backends_agree_and_non_contiguous_inputs_work():
    inputs = make_inputs(2, 2, 3, 4, 50, dtype=torch.float32)
    base = selective_scan(*inputs, delta_softplus=True)
    # Transposed storage for u and B: the op must read them correctly.
    u_nc = inputs[0].transpose(1, 2).contiguous().transpose(1, 2)
    B_nc = inputs[3].permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0)
    assert not u_nc.is_contiguous() and not B_nc.is_contiguous()
    other = selective_scan(u_nc, inputs[1], inputs[2], B_nc, *inputs[4:], delta_softplus=True)
    torch.testing.assert_close(other, base, rtol=0, atol=0)
    ref = selective_scan(*inputs, delta_softplus=True, backend="reference")
    torch.testing.assert_close(base, ref, rtol=1e-5, atol=1e-5)


def test_non_contiguous_inputs_get_the_same_gradients_across_tiles():
    inputs = make_inputs(2, 2, 3, 4, 90, dtype=torch.float64)
    plan = {"block_steps": 7, "keep": False, "tile_steps": 20}
    base = run_with_grads(selective_scan_torch, inputs, True, **plan)
    u_nc = inputs[0].detach().transpose(1, 2).contiguous().transpose(1, 2)
    C_nc = inputs[4].detach().permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0)
    other = run_with_grads(selective_scan_torch, [u_nc, *inputs[1:4], C_nc, *inputs[5:]], True, **plan)
    torch.testing.assert_close(other[0], base[0], rtol=0, atol=0)
    for name, g, g_base in zip(NAMES, other[2], base[2], strict=True):
        if g_base is not None:
            torch.testing.assert_close(g, g_base, rtol=0, atol=0, msg=f"d{name}")


def test_autocast_does_not_lower_precision():
    inputs = make_inputs(2, 2, 4, 4, 64, dtype=torch.float32)
    expected = selective_scan(*inputs, delta_softplus=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = selective_scan(*inputs, delta_softplus=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_no_grad_call_keeps_nothing_and_matches():
    inputs = make_inputs(1, 2, 4, 4, 200, dtype=torch.float32)
    with torch.no_grad():
        y = selective_scan(*inputs, delta_softplus=True)
    assert y.grad_fn is None and torch.isfinite(y).all()
    grad_inputs = [t.requires_grad_() for t in inputs]
    torch.testing.assert_close(y, selective_scan(*grad_inputs, delta_softplus=True).detach())


def test_plan_choice_follows_slab_size():
    assert make_plan(16384, 2 * 768 * 16).algorithm == "seq"
    assert make_plan(4096, 16 * 16).algorithm == "chunked"
    big = make_plan(16384, 2 * 768 * 16)
    assert not big.keep and big.block_steps < 16384
    small = make_plan(1000, 64)
    assert small.keep and small.block_steps == 1000 and small.tile_steps == 1000
    # Tiles hold whole blocks: the fewest that reach TILE_ELEMENTS per (T, batch, K*Dk) tensor.
    tiled = make_plan(16384, 2 * 768 * 16, step_elements=2 * 768)
    assert tiled.tile_steps % tiled.block_steps == 0
    assert (tiled.tile_steps - tiled.block_steps) * 2 * 768 < TILE_ELEMENTS <= tiled.tile_steps * 2 * 768
    assert make_plan(100, 64, block_steps=7, tile_steps=10).tile_steps == 14


def test_in_place_edit_of_an_input_before_backward_raises():
    """The backward rebuilds tiles from the saved inputs, so editing one in place must not go unnoticed."""
    leaves = [t.requires_grad_() for t in make_inputs(1, 2, 4, 3, 40, dtype=torch.float32)]
    inner = leaves[0] * 1.0
    y = selective_scan_torch(inner, *leaves[1:], delta_softplus=True, block_steps=8, keep=False)
    inner.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_tiled_call_makes_no_full_length_temporaries(monkeypatch):
    """With tiles, no tensor of the full (L, batch, K*Dk) size is made besides the output."""
    import nnunetv2_cipa.ops.torch_scan as torch_scan

    inputs = make_inputs(1, 2, 4, 3, 600, dtype=torch.float32)  # batch 1, K 2, Dk 4, N 3, L 600
    sizes = []
    real_empty = torch.empty

    def spy_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        sizes.append(t.numel())
        return t

    monkeypatch.setattr(torch_scan.torch, "empty", spy_empty)
    leaves = [t.requires_grad_() for t in inputs]
    y = selective_scan_torch(*leaves, delta_softplus=True, block_steps=10, keep=False, tile_steps=50)
    y.sum().backward()
    full_u, full_b = 8 * 600, 6 * 600
    assert sizes.count(full_u) == 3  # the output, grad_u and grad_delta
    assert sizes.count(full_b) == 2  # grad_B and grad_C
    assert max(s for s in sizes if s not in (full_u, full_b)) <= 50 * 8


# ------------------------------------------------------------------------------------ dispatch


@pytest.fixture
def spies(monkeypatch):
    """Replace the backends by recorders (they still compute with the torch backend)."""
    calls = []

    def spy(name):
        def fn(*args):
            calls.append(name)
            return selective_scan_torch(*args)
        return fn

    monkeypatch.setattr(scan_module, "selective_scan_torch", spy("torch"))
    monkeypatch.setattr(scan_module, "selective_scan_reference", spy("reference"))
    monkeypatch.delenv(scan_module.ENV_BACKEND, raising=False)
    monkeypatch.setattr(scan_module, "_fallback_logged", False)
    return calls


def small_inputs():
    return make_inputs(1, 2, 2, 2, 8, dtype=torch.float32)


def test_cpu_auto_runs_torch_and_env_overrides_auto_when_chosen(spies, monkeypatch):
    selective_scan(*small_inputs())
    assert spies == ["torch"]
    monkeypatch.setenv(scan_module.ENV_BACKEND, "reference")
    selective_scan(*small_inputs())  # the scan call itself never reads the environment
    assert spies == ["torch", "torch"]
    backend = choose_scan_backend("auto")  # networks choose once, when they are built
    assert backend == "reference" and choose_scan_backend("torch") == "torch"  # explicit wins
    selective_scan(*small_inputs(), backend=backend)
    assert spies == ["torch", "torch", "reference"]
    monkeypatch.setenv(scan_module.ENV_BACKEND, "fastest")
    with pytest.raises(ValueError, match="NNUNETV2_CIPA_SCAN_BACKEND"):
        choose_scan_backend()


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="argument 'backend'"):
        selective_scan(*small_inputs(), backend="triton")


@pytest.mark.parametrize("backend", ["cuda", "mamba"])
def test_explicit_kernel_backend_on_cpu_tensors_raises(backend):
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        selective_scan(*small_inputs(), backend=backend)


def test_cuda_tensors_fall_back_with_one_log_line_when_module_absent(spies, monkeypatch, caplog):
    monkeypatch.setattr(scan_module, "_on_cuda", lambda t: True)  # pretend the tensors are on a GPU
    monkeypatch.setitem(sys.modules, "nnunetv2_cipa.ops.cuda_backend", None)  # import -> ImportError
    with caplog.at_level(logging.WARNING, logger=scan_module.logger.name):
        selective_scan(*small_inputs())
        selective_scan(*small_inputs())
    assert spies == ["torch", "torch"]
    lines = [r for r in caplog.records if "PyTorch backend" in r.getMessage()]
    assert len(lines) == 1 and "cuda_backend is not importable" in lines[0].getMessage()
    with pytest.raises(RuntimeError, match="backend='cuda' is unavailable"):
        selective_scan(*small_inputs(), backend="cuda")
    monkeypatch.setitem(sys.modules, "nnunetv2_cipa.ops.mamba_backend", None)
    with pytest.raises(RuntimeError, match="backend='mamba' is unavailable"):
        selective_scan(*small_inputs(), backend="mamba")


class _FakeCudaBackend:
    def __init__(self, loads):
        self.loads = loads
        self.calls = 0

    def load_extension(self):
        return object() if self.loads else None

    def selective_scan_cuda(self, *args):
        self.calls += 1
        return selective_scan_torch(*args)


def test_cuda_tensors_use_the_kernel_when_it_loads(spies, monkeypatch, caplog):
    monkeypatch.setattr(scan_module, "_on_cuda", lambda t: True)
    fake = _FakeCudaBackend(loads=True)
    monkeypatch.setitem(sys.modules, "nnunetv2_cipa.ops.cuda_backend", fake)
    selective_scan(*small_inputs())
    assert fake.calls == 1 and spies == []
    # float64 has no kernel: it runs torch, silently.
    selective_scan(*make_inputs(1, 2, 2, 2, 8))
    assert fake.calls == 1 and spies == ["torch"]
    with pytest.raises(RuntimeError, match="not float64"):
        selective_scan(*make_inputs(1, 2, 2, 2, 8), backend="cuda")
    fake.loads = False
    with caplog.at_level(logging.WARNING, logger=scan_module.logger.name):
        selective_scan(*small_inputs())
    assert spies == ["torch", "torch"]
    assert any("not built and could not be compiled" in r.getMessage() for r in caplog.records)


# -------------------------------------------------------------------------------------- errors


def _replace(inputs, index, value):
    out = list(inputs)
    out[index] = value
    return out


BAD_CASES = [
    ("u", lambda x: _replace(x, 0, x[0][0]), "argument 'u' must have shape"),
    ("delta", lambda x: _replace(x, 1, x[1][..., :-1]), "argument 'delta' must have the shape of u"),
    ("A rows", lambda x: _replace(x, 2, x[2][:-1]), "argument 'A' must have shape"),
    ("B length", lambda x: _replace(x, 3, x[3][..., :-1]), "argument 'B' must have shape"),
    ("B 3-D", lambda x: _replace(x, 3, x[3][:, 0]), "argument 'B' must have shape"),
    ("B groups", lambda x: _replace(x, 3, torch.zeros(1, 3, 2, 8)), "does not divide"),
    ("C", lambda x: _replace(x, 4, x[4][:, :, :1]), "argument 'C' must have the shape of B"),
    ("D", lambda x: _replace(x, 5, x[5][:-1]), "argument 'D' must have shape"),
    ("bias", lambda x: _replace(x, 6, x[6][None]), "argument 'delta_bias' must have shape"),
    ("u dtype", lambda x: [x[0].to(torch.int32), *x[1:]], "argument 'u' must be float32"),
    ("delta dtype", lambda x: _replace(x, 1, x[1].half()), "argument 'delta' must have the dtype of u"),
    ("B dtype", lambda x: _replace(x, 3, x[3].bfloat16()), "argument 'B' must have the dtype of u"),
    ("A dtype", lambda x: _replace(x, 2, x[2].half()), "argument 'A' must be torch.float32"),
    ("D dtype", lambda x: _replace(x, 5, x[5].double()), "argument 'D' must be torch.float32"),
    ("not tensor", lambda x: _replace(x, 2, [[1.0]]), "argument 'A' must be a torch.Tensor"),
    ("empty", lambda x: [t[..., :0] if i in (0, 1, 3, 4) else t for i, t in enumerate(x)], ">= 1"),
    ("device", lambda x: _replace(x, 6, x[6].to("meta")), "argument 'delta_bias' must be on the device"),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_clear_errors_for_bad_arguments(case):
    _, mutate, message = case
    with pytest.raises(ValueError, match=message):
        selective_scan(*mutate(small_inputs()))


def test_cuda_tensors_with_states_beyond_the_kernel_run_torch(spies, monkeypatch, caplog):
    """N above the kernel's compile-time maximum falls back to torch under "auto" instead of raising."""
    monkeypatch.setattr(scan_module, "_on_cuda", lambda t: True)
    fake = _FakeCudaBackend(loads=True)
    fake.MAX_STATE = 4
    monkeypatch.setitem(sys.modules, "nnunetv2_cipa.ops.cuda_backend", fake)
    selective_scan(*make_inputs(1, 2, 2, 4, 8, dtype=torch.float32))
    assert fake.calls == 1 and spies == []
    with caplog.at_level(logging.WARNING, logger=scan_module.logger.name):
        selective_scan(*make_inputs(1, 2, 2, 5, 8, dtype=torch.float32))
    assert fake.calls == 1 and spies == ["torch"]
    assert any("N <= 4, got N = 5" in r.getMessage() for r in caplog.records)
