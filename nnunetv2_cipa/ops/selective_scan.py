"""Public selective-scan entry point: argument checks, dtype rules and backend choice.

Why one entry point: every Mamba block of CIPA calls the scan through here, so the contract
(VMamba's grouped "oflex" layout) is checked once, with messages that name the argument, and
the backend can be switched without touching model code:

* ``backend`` argument: ``"auto" | "torch" | "reference" | "cuda" | "mamba"``;
* ``"auto"``: CPU tensors run ``torch``; CUDA tensors run our kernel (``cuda``) when the extension
  loads, else ``torch`` with one log line per process. float64 always runs ``torch`` (the
  kernels are fp32/fp16/bf16 only);
* :func:`choose_scan_backend` applies the environment variable ``NNUNETV2_CIPA_SCAN_BACKEND`` to a
  requested ``"auto"``. Networks call it once, when they are built (``CIPA.set_scan_backend``), and
  store the result; the scan itself never reads the environment, so a backend is fixed for the life
  of a network and a scan call costs no environment lookup.

The CUDA modules (``cuda_backend``, ``mamba_backend``) are imported lazily inside the call and
tolerated when absent, so this file works on a CPU-only install.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

import torch

from nnunetv2_cipa.ops.reference import selective_scan_reference
from nnunetv2_cipa.ops.torch_scan import selective_scan_torch

ENV_BACKEND = "NNUNETV2_CIPA_SCAN_BACKEND"
BACKENDS = ("auto", "torch", "reference", "cuda", "mamba")
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

logger = logging.getLogger(__name__)
_fallback_logged = False


def _fail(argument: str, problem: str) -> None:
    raise ValueError(f"selective_scan: argument '{argument}' {problem}")


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_inputs(u, delta, A, B, C, D, delta_bias) -> None:
    """Validate the grouped contract; raise ValueError naming the argument on the first problem."""
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "delta_bias": delta_bias}
    for name, value in named.items():
        if value is None and name in ("D", "delta_bias"):
            continue
        if not isinstance(value, torch.Tensor):
            _fail(name, f"must be a torch.Tensor, got {type(value).__name__}")
    if u.dim() != 3:
        _fail("u", f"must have shape (batch, K*D, L), got {_shape(u)}")
    batch, channels, length = u.shape
    if batch < 1 or channels < 1 or length < 1:
        _fail("u", f"must have batch, channels and length >= 1, got {_shape(u)}")
    if u.dtype not in INPUT_DTYPES:
        _fail("u", f"must be float32, float16, bfloat16 or float64, got {u.dtype}")
    if _shape(delta) != _shape(u):
        _fail("delta", f"must have the shape of u {_shape(u)}, got {_shape(delta)}")
    if A.dim() != 2 or A.shape[0] != channels or A.shape[1] < 1:
        _fail("A", f"must have shape (K*D, N) = ({channels}, N) with N >= 1, got {_shape(A)}")
    n_state = A.shape[1]
    if B.dim() != 4:
        _fail("B", f"must have shape (batch, K, N, L), got {_shape(B)}")
    groups = B.shape[1]
    expected = (batch, groups, n_state, length)
    if _shape(B) != expected or groups < 1:
        _fail("B", f"must have shape (batch, K, N, L) = {expected}, got {_shape(B)}")
    if channels % groups != 0:
        _fail("B", f"has K = {groups} groups, which does not divide the {channels} channels of u")
    if _shape(C) != expected:
        _fail("C", f"must have the shape of B {expected}, got {_shape(C)}")
    for name, value in (("D", D), ("delta_bias", delta_bias)):
        if value is not None and _shape(value) != (channels,):
            _fail(name, f"must have shape (K*D,) = ({channels},), got {_shape(value)}")

    for name in ("delta", "B", "C"):
        if named[name].dtype != u.dtype:
            _fail(name, f"must have the dtype of u ({u.dtype}), got {named[name].dtype}")
    weight_dtypes = (torch.float32, torch.float64) if u.dtype == torch.float64 else (torch.float32,)
    allowed = " or ".join(str(d) for d in weight_dtypes)
    for name in ("A", "D", "delta_bias"):
        value = named[name]
        if value is not None and value.dtype not in weight_dtypes:
            _fail(name, f"must be {allowed} (the state is kept in fp32), got {value.dtype}")
    for name, value in named.items():
        if value is not None and value.device != u.device:
            _fail(name, f"must be on the device of u ({u.device}), got {value.device}")


def _import_optional(name: str) -> ModuleType | None:
    """Import ``nnunetv2_cipa.ops.<name>`` if it exists (the CUDA side is optional)."""
    try:
        return importlib.import_module(f"nnunetv2_cipa.ops.{name}")
    except ImportError as exc:
        logger.debug("nnunetv2_cipa.ops.%s is not importable: %s", name, exc)
        return None


def _load_cuda() -> tuple[ModuleType | None, str]:
    """The cuda_backend module if its extension loads, else (None, reason)."""
    module = _import_optional("cuda_backend")
    if module is None:
        return None, "nnunetv2_cipa.ops.cuda_backend is not importable"
    if module.load_extension() is None:
        return None, "the selective-scan CUDA extension is not built and could not be compiled"
    return module, ""


def _load_mamba() -> tuple[ModuleType | None, str]:
    module = _import_optional("mamba_backend")
    if module is None:
        return None, "nnunetv2_cipa.ops.mamba_backend is not importable"
    if not module.available():
        return None, "mamba-ssm's selective_scan_cuda is not installed"
    return module, ""


def _on_cuda(t: torch.Tensor) -> bool:
    return t.is_cuda


def _log_fallback_once(reason: str) -> None:
    global _fallback_logged
    if not _fallback_logged:
        _fallback_logged = True
        logger.warning("selective_scan: CUDA tensors run the PyTorch backend (slow) because %s", reason)


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else ValueError naming the argument."""
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    return backend


def choose_scan_backend(backend: str = "auto") -> str:
    """The backend a network should store: ``backend``, or for ``"auto"`` the environment override.

    An explicit ``backend`` wins over ``NNUNETV2_CIPA_SCAN_BACKEND``; an invalid value of the variable
    is an error naming it.
    """
    check_backend(backend)
    if backend == "auto":
        env = os.environ.get(ENV_BACKEND, "").strip()
        if env:
            if env not in BACKENDS:
                raise ValueError(f"selective_scan: environment variable {ENV_BACKEND} must be one of "
                                 f"{BACKENDS}, got {env!r}")
            backend = env
    return backend


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
    out_float32: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan with VMamba's grouped contract (differentiable in every tensor argument).

    dt = softplus(delta + delta_bias) (softplus only with ``delta_softplus``);
    h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t (h_{-1} = 0); y_t = sum_n C_t,n h_t,n + D u_t.

    Args:
        u, delta: (batch, K*D, L), float32/float16/bfloat16 (float64 for tests, torch backend).
        A: (K*D, N) float32. B, C: (batch, K, N, L) in the dtype of u; channel d reads group d // D.
        D, delta_bias: optional (K*D,) float32.
        return_last_state: also return h_{L-1}, (batch, K*D, N) float32.
        backend: "auto" | "torch" | "reference" | "cuda" | "mamba" (see the module docstring).
        out_float32: return y in float32 even for float16/bfloat16 inputs.

    Returns:
        y (batch, K*D, L) in the dtype of u (float32 with ``out_float32``), or (y, last_state).
    """
    _check_inputs(u, delta, A, B, C, D, delta_bias)
    name = check_backend(backend)
    on_cuda = _on_cuda(u)
    flags = (bool(delta_softplus), bool(return_last_state), bool(out_float32))
    args = (u, delta, A, B, C, D, delta_bias, *flags)

    if name == "auto":
        name = "torch"
        if on_cuda and u.dtype != torch.float64:
            module, reason = _load_cuda()
            max_state = getattr(module, "MAX_STATE", None)
            if module is not None and max_state is not None and A.shape[1] > max_state:
                module, reason = None, f"the CUDA kernel supports N <= {max_state}, got N = {A.shape[1]}"
            if module is not None:
                return module.selective_scan_cuda(*args)
            _log_fallback_once(reason)
    if name == "torch":
        return selective_scan_torch(*args)
    if name == "reference":
        return selective_scan_reference(*args)

    # Explicit kernel backends: fail loudly rather than silently running something else.
    if not on_cuda:
        raise RuntimeError(f"selective_scan: backend={name!r} needs CUDA tensors, got tensors on {u.device}")
    if u.dtype == torch.float64:
        raise RuntimeError(f"selective_scan: backend={name!r} supports float32/float16/bfloat16, not float64")
    module, reason = _load_cuda() if name == "cuda" else _load_mamba()
    if module is None:
        raise RuntimeError(f"selective_scan: backend={name!r} is unavailable: {reason}")
    if name == "cuda":
        return module.selective_scan_cuda(*args)
    return module.selective_scan_mamba(*args)
