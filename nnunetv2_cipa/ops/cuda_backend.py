"""Our selective-scan CUDA kernel: the loader of the compiled extension and its autograd Function.

Why a loader with three tiers: a plain ``pip install`` must stay pure Python (CPU machines, CI), yet a
GPU user should get the kernel without extra steps. So :func:`load_extension` tries, once per process,

1. the ahead-of-time module ``nnunetv2_cipa._selective_scan_cuda`` (built by
   ``NNUNETV2_CIPA_BUILD_CUDA=1 pip install --no-build-isolation --no-deps -e .`` on a CUDA machine);
2. a just-in-time build with ``torch.utils.cpp_extension.load`` from the sources shipped as package data
   (``nnunetv2_cipa._csrc``), into ``<checkout>/build/torch_extensions`` for an editable install, else
   a per-user cache folder (``TORCH_EXTENSIONS_DIR`` wins when set); ``NNUNETV2_CIPA_CUDA_JIT=0``
   disables this tier;

and otherwise returns None after logging the reason once. It never raises: the dispatcher
(:mod:`nnunetv2_cipa.ops.selective_scan`) then falls back to the PyTorch backend. Importing this module
needs neither CUDA nor a compiler.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
from pathlib import Path
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

ENV_JIT = "NNUNETV2_CIPA_CUDA_JIT"
#: Largest state size N with a compiled kernel (kScanMaxState in csrc/selective_scan/selective_scan.h).
MAX_STATE = 16

_lock = threading.Lock()
_tried = False
_module: ModuleType | None = None
_reason = ""


def _build_config() -> ModuleType:
    """The torch-free build configuration shipped with the CUDA sources (``csrc/build_config.py``)."""
    return importlib.import_module("nnunetv2_cipa._csrc.build_config")


def _checkout_root(source_dir: Path) -> Path | None:
    """The source checkout when the package is installed editable (sources live in ``<root>/csrc``)."""
    root = source_dir.parent.parent
    if (root / "pyproject.toml").is_file() and (root / "nnunetv2_cipa").is_dir():
        return root
    return None


def build_directory(source_dir: Path) -> Path:
    """Where the JIT build goes; one sub-folder per torch/CUDA version so stale builds are never reused."""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", f"torch{torch.__version__}-cu{torch.version.cuda}")
    explicit = os.environ.get("TORCH_EXTENSIONS_DIR", "").strip()
    if explicit:
        base = Path(explicit)
    else:
        root = _checkout_root(source_dir)
        if root is not None:
            base = root / "build" / "torch_extensions"  # git-ignored, survives between runs
        else:
            cache = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
            base = Path(cache) / "nnunetv2_cipa" / "torch_extensions"
    return base / tag


def _try_aot(config: ModuleType) -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module(config.AOT_MODULE), ""
    except ImportError as exc:
        return None, f"{config.AOT_MODULE} is not built ({exc})"


def _try_jit(config: ModuleType) -> tuple[ModuleType | None, str]:
    if os.environ.get(ENV_JIT, "").strip() == "0":
        return None, f"the just-in-time build is disabled ({ENV_JIT}=0)"
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        return None, "no CUDA toolkit (nvcc) was found for a just-in-time build (set CUDA_HOME)"
    sources = config.source_paths()
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        return None, f"the CUDA sources are missing from the installed package: {missing}"
    folder = build_directory(sources[0].parent)
    folder.mkdir(parents=True, exist_ok=True)
    arch_list = os.environ.get(config.ENV_ARCH_LIST, "").strip() or None  # None: the visible GPU
    logger.info("selective_scan: compiling the CUDA extension into %s (first use, a few minutes)", folder)
    try:
        module = cpp_extension.load(
            name=config.JIT_MODULE,
            sources=[str(path) for path in sources],
            extra_cflags=list(config.CXX_FLAGS),
            extra_cuda_cflags=config.nvcc_flags(arch_list),
            build_directory=str(folder),
            verbose=False,
        )
    except Exception as exc:  # compiler or linker failure: report it and fall back, never crash the caller
        return None, f"the just-in-time build in {folder} failed: {type(exc).__name__}: {exc}"
    return module, ""


def _load() -> tuple[ModuleType | None, str]:
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} sees no CUDA device"
    try:
        config = _build_config()
    except ImportError as exc:
        return None, f"the CUDA sources (nnunetv2_cipa._csrc) are not installed ({exc})"
    module, aot_reason = _try_aot(config)
    if module is not None:
        return module, ""
    module, jit_reason = _try_jit(config)
    if module is not None:
        return module, ""
    return None, f"{aot_reason}; {jit_reason}"


def load_extension() -> ModuleType | None:
    """The compiled extension module, or None (reason logged once, see :func:`unavailable_reason`)."""
    global _tried, _module, _reason
    if _tried:
        return _module
    with _lock:
        if not _tried:
            try:
                _module, _reason = _load()
            except Exception as exc:  # never raise from the loader: the caller falls back to torch
                _module, _reason = None, f"unexpected {type(exc).__name__}: {exc}"
            if _module is None:
                logger.warning("selective_scan: the CUDA extension is unavailable: %s", _reason)
            _tried = True
    return _module


def unavailable_reason() -> str:
    """Why :func:`load_extension` returned None ('' when it loaded or was not tried yet)."""
    return _reason


def reset_loader() -> None:
    """Forget the cached result so that the next :func:`load_extension` tries again (tests)."""
    global _tried, _module, _reason
    with _lock:
        _tried, _module, _reason = False, None, ""


def _require_extension() -> ModuleType:
    module = load_extension()
    if module is None:
        raise RuntimeError(f"selective_scan_cuda: the CUDA extension is unavailable: {_reason}")
    return module


class SelectiveScanCudaFunction(torch.autograd.Function):
    """Forward saves the kernel's chunk checkpoints of the state; backward recomputes from them."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, out_float32):
        ext = _require_extension()
        ctx.set_materialize_grads(False)  # unused outputs arrive as None: no zero tensors to read
        out, checkpoints = ext.fwd(u, delta, A, B, C, D, delta_bias, bool(delta_softplus), bool(out_float32))
        ctx.delta_softplus = bool(delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, checkpoints)
        last_state = checkpoints[:, :, -1, :].clone()  # the last checkpoint is the final state
        return out, last_state

    @staticmethod
    def backward(ctx, grad_out, grad_last_state):
        u, delta, A, B, C, D, delta_bias, checkpoints = ctx.saved_tensors
        if grad_out is None:  # only the final state was used
            grad_out = torch.zeros(u.shape, dtype=torch.float32, device=u.device)
        if grad_last_state is not None:
            grad_last_state = grad_last_state.float()
        du, ddelta, dA, dB, dC, dD, ddelta_bias = _require_extension().bwd(
            u, delta, A, B, C, D, delta_bias, grad_out, checkpoints, grad_last_state, ctx.delta_softplus
        )
        return (du, ddelta, dA, dB, dC, dD if D is not None else None,
                ddelta_bias if delta_bias is not None else None, None, None)


def selective_scan_cuda(
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
    """The selective scan on our CUDA kernel (contract of :func:`nnunetv2_cipa.ops.selective_scan`).

    Arguments are checked by the public entry point and again by the binding (which names the
    argument). Unlike mamba-ssm, the gradient of ``last_state`` is propagated, as in the torch backend.
    Raises ValueError for N > MAX_STATE (use the torch backend) and RuntimeError when the extension is
    unavailable.
    """
    if A.dim() == 2 and A.shape[1] > MAX_STATE:
        raise ValueError(f"selective_scan_cuda: N = {A.shape[1]} states exceed the compiled maximum of "
                         f"{MAX_STATE}; use backend='torch'")
    out, last_state = SelectiveScanCudaFunction.apply(
        u, delta, A, B, C, D, delta_bias, delta_softplus, out_float32
    )
    if return_last_state:
        return out, last_state
    return out
