"""Build configuration of the selective-scan CUDA extension (torch-free at import time).

One place for the source list and the compiler flags, shared by three users so they cannot drift:

* ``setup.py`` (opt-in ahead-of-time build: ``NNUNETV2_CIPA_BUILD_CUDA=1`` on a machine whose torch
  has CUDA), through :func:`cuda_extensions`;
* the just-in-time loader ``nnunetv2_cipa.ops.cuda_backend`` (``torch.utils.cpp_extension.load`` on
  first CUDA use), which imports this module from the installed package data ``nnunetv2_cipa._csrc``;
* the CPU-only compile check ``tests/ops/test_ops_cuda_compile.py`` (plain nvcc / g++ commands).

Importing this module never imports torch: ``setup.py`` runs it inside pip's isolated build
environment, where torch is deliberately absent (it is not a build requirement).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "selective_scan"

#: The kernel translation units: torch-free, one per (direction, input dtype) so builds run in parallel.
KERNEL_SOURCES = tuple(
    f"{direction}_{dtype}.cu" for direction in ("fwd", "bwd") for dtype in ("fp32", "fp16", "bf16")
)
#: The only file that sees torch: checks, allocation, dtype dispatch, pybind11 module.
BINDING_SOURCE = "binding.cpp"

#: Module name of the ahead-of-time build (a submodule of the package) and of the JIT build.
AOT_MODULE = "nnunetv2_cipa._selective_scan_cuda"
JIT_MODULE = "nnunetv2_cipa_selective_scan_cuda"

ENV_BUILD = "NNUNETV2_CIPA_BUILD_CUDA"
ENV_ARCH_LIST = "TORCH_CUDA_ARCH_LIST"
#: Ampere and Hopper SASS, plus Hopper PTX so that newer GPUs can JIT the kernels at load time.
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"

CXX_FLAGS = ["-O3"]
#: No ``-std=``: torch picks it (C++17 before 2.13, C++20 from 2.13) and the sources are valid in both.
#: torch adds ``-D__CUDA_NO_HALF_CONVERSIONS__`` and friends itself; the kernels convert explicitly.
NVCC_FLAGS = ["-O3", "--use_fast_math", "-lineinfo"]


def source_paths(source_dir: Path | None = None) -> list[Path]:
    """Absolute paths of the binding and all kernel sources (binding first)."""
    folder = SOURCE_DIR if source_dir is None else Path(source_dir)
    return [folder / BINDING_SOURCE, *(folder / name for name in KERNEL_SOURCES)]


def parse_arch_list(arch_list: str) -> list[tuple[str, bool]]:
    """``"8.0;9.0+PTX"`` -> ``[("80", False), ("90", True)]`` (compute capability, emit PTX too).

    Accepts ``;``, ``,`` or spaces as separators, like torch. Raises ValueError naming the variable on
    an entry that is not ``<major>.<minor>[+PTX]``.
    """
    entries = [e for e in arch_list.replace(",", ";").replace(" ", ";").split(";") if e]
    parsed = []
    for entry in entries:
        base, plus, suffix = entry.partition("+")
        major, dot, minor = base.partition(".")
        if not (dot and major.isdigit() and minor.isdigit()) or (plus and suffix.upper() != "PTX"):
            raise ValueError(f"{ENV_ARCH_LIST}: entry {entry!r} is not of the form '<major>.<minor>[+PTX]'")
        parsed.append((major + minor, bool(plus)))
    if not parsed:
        raise ValueError(f"{ENV_ARCH_LIST}: no architecture in {arch_list!r}")
    return parsed


def arch_list_from_env(default: str = DEFAULT_ARCH_LIST) -> str:
    """``TORCH_CUDA_ARCH_LIST`` when set (the usual torch override), else ``default``."""
    value = os.environ.get(ENV_ARCH_LIST, "").strip()
    return value or default


def gencode_flags(arch_list: str) -> list[str]:
    """nvcc ``-gencode`` flags for an arch list (SASS for each entry, PTX where ``+PTX``)."""
    flags = []
    for cc, ptx in parse_arch_list(arch_list):
        flags.append(f"-gencode=arch=compute_{cc},code=sm_{cc}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{cc},code=compute_{cc}")
    return flags


def nvcc_flags(arch_list: str | None) -> list[str]:
    """Our nvcc flags; explicit ``-gencode`` flags when ``arch_list`` is given.

    torch skips its own architecture flags when the user's flags mention an architecture, so an explicit
    list fully decides what is built. ``None`` leaves the choice to torch (JIT: the visible GPU).
    """
    return [*NVCC_FLAGS, *(gencode_flags(arch_list) if arch_list else [])]


def _skip(reason: str) -> tuple[list, dict]:
    print(f"nnunetv2_cipa: {ENV_BUILD}=1 but the CUDA extension is not built: {reason}", file=sys.stderr)
    return [], {}


def cuda_extensions() -> tuple[list, dict]:
    """``(ext_modules, cmdclass)`` for ``setup()``; ``([], {})`` unless an AOT build was asked for.

    The build happens only with ``NNUNETV2_CIPA_BUILD_CUDA=1`` and a torch that has CUDA (install with
    ``--no-build-isolation`` so that setup.py sees that torch). Otherwise the package stays pure Python
    and the extension is compiled on first CUDA use instead.
    """
    if os.environ.get(ENV_BUILD, "").strip() != "1":
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:
        return _skip(f"torch is not importable ({exc}); install with --no-build-isolation")
    if torch.version.cuda is None or cpp_extension.CUDA_HOME is None:
        return _skip(f"torch {torch.__version__} has no CUDA or no CUDA toolkit was found (CUDA_HOME)")

    root = SOURCE_DIR.parent.parent  # setuptools wants sources relative to setup.py
    sources = [str(path.relative_to(root)) for path in source_paths()]
    extension = cpp_extension.CUDAExtension(
        name=AOT_MODULE,
        sources=sources,
        extra_compile_args={"cxx": list(CXX_FLAGS), "nvcc": nvcc_flags(arch_list_from_env())},
    )
    return [extension], {"build_ext": cpp_extension.BuildExtension}
