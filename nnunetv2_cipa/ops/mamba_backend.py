"""mamba-ssm's selective-scan kernel as a second CUDA reference (optional, GPU machines only).

Why: the benchmark and the GPU tests compare our kernel against the kernel users know. mamba-ssm takes
our grouped layout directly (B, C of shape (batch, G, N, L) in the input dtype, A (dim, N) fp32, D and
delta_bias fp32), so no data is moved. Its output has the dtype of the inputs; ``out_float32`` casts it
afterwards (so for fp16/bf16 it is rounded once more than our kernel's fp32 output). Since mamba-ssm
2.3 its CUDA extension is only built with ``MAMBA_KEEP_CUDA_BUILD=TRUE``; :func:`available` checks that
the compiled module really imports. Imported lazily: nothing here runs at package import.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

_interface: ModuleType | None = None
_checked = False


def _load() -> ModuleType | None:
    global _interface, _checked
    if not _checked:
        _checked = True
        try:
            importlib.import_module("selective_scan_cuda")  # the compiled kernel, absent in a default install
            _interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        except Exception as exc:  # ImportError, or an ABI mismatch raising OSError/RuntimeError
            logger.info("mamba-ssm's selective_scan_cuda is unavailable: %s", exc)
            _interface = None
    return _interface


def available() -> bool:
    """True when mamba-ssm and its compiled selective_scan_cuda import."""
    return _load() is not None


def selective_scan_mamba(
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
    """Same contract as ``nnunetv2_cipa.ops.selective_scan`` (arguments checked there)."""
    interface = _load()
    if interface is None:
        raise RuntimeError("selective_scan_mamba: mamba-ssm's compiled selective_scan_cuda is not installed")
    result = interface.selective_scan_fn(
        u, delta, A, B, C, D=D, z=None, delta_bias=delta_bias, delta_softplus=delta_softplus,
        return_last_state=return_last_state,
    )
    out, last_state = result if return_last_state else (result, None)
    if out_float32:
        out = out.float()
    return (out, last_state) if return_last_state else out
