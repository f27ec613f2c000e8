"""Build mamba-ssm's ``selective_scan_cuda`` from its source distribution, for the local GPU only.

Why: the selective-scan benchmark and the GPU tests compare our kernel against mamba-ssm's, but
mamba-ssm publishes no wheel for every torch/CUDA pair (none for torch 2.11 + CUDA 13), and its own
``setup.py`` compiles eleven architectures, which takes far longer than the one the GPU at hand needs. This
script compiles the same sources with the same nvcc flags for the architecture of the GPU in this
machine only, with ``torch.utils.cpp_extension.load``, and prints the ``PYTHONPATH`` under which
``import selective_scan_cuda`` and ``import mamba_ssm`` then work. Nothing of mamba-ssm enters this
repository: the user supplies the sdist (``pip download --no-deps --no-binary :all: mamba-ssm`` or the
``.tar.gz`` from PyPI), which is unpacked into the output folder.

    python benchmarks/build_mamba_reference.py mamba_ssm-2.3.2.post1.tar.gz --out /tmp/mamba_ref
    export PYTHONPATH=<the PYTHONPATH=... line it prints last>:$PYTHONPATH
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import time
from pathlib import Path

#: The translation units of mamba-ssm 2.x's selective_scan_cuda extension (its setup.py lists the same).
_SOURCES = (
    "selective_scan.cpp",
    "selective_scan_fwd_fp32.cu",
    "selective_scan_fwd_fp16.cu",
    "selective_scan_fwd_bf16.cu",
    "selective_scan_bwd_fp32_real.cu",
    "selective_scan_bwd_fp32_complex.cu",
    "selective_scan_bwd_fp16_real.cu",
    "selective_scan_bwd_fp16_complex.cu",
    "selective_scan_bwd_bf16_real.cu",
    "selective_scan_bwd_bf16_complex.cu",
)
#: mamba-ssm's nvcc flags, less the architecture list (replaced by the local GPU's).
_NVCC_FLAGS = [
    "-O3", "-std=c++17",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo",
]


def unpack(sdist: Path, out: Path) -> Path:
    """Unpack the sdist (or accept an unpacked folder); returns the folder holding ``csrc/``."""
    if sdist.is_dir():
        root = sdist
    else:
        if not tarfile.is_tarfile(sdist):
            raise SystemExit(f"build_mamba_reference: {sdist}: not a .tar.gz source distribution")
        with tarfile.open(sdist) as archive:
            archive.extractall(out / "unpacked", filter="data")
        candidates = [p for p in (out / "unpacked").iterdir() if (p / "csrc" / "selective_scan").is_dir()]
        if len(candidates) != 1:
            raise SystemExit(f"build_mamba_reference: {sdist}: no csrc/selective_scan folder inside")
        root = candidates[0]
    if not (root / "csrc" / "selective_scan" / _SOURCES[0]).is_file():
        raise SystemExit(f"build_mamba_reference: {root}: csrc/selective_scan/{_SOURCES[0]} is missing")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sdist", type=Path, help="mamba_ssm-<version>.tar.gz or its unpacked folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the sources and the build")
    args = parser.parse_args(argv)

    import torch
    from torch.utils import cpp_extension

    if not torch.cuda.is_available():
        raise SystemExit("build_mamba_reference: torch sees no CUDA device")
    args.out.mkdir(parents=True, exist_ok=True)
    root = unpack(args.sdist, args.out)
    major, minor = torch.cuda.get_device_capability()
    cc = f"{major}{minor}"
    build = args.out / "build"
    build.mkdir(exist_ok=True)
    src = root / "csrc" / "selective_scan"
    started = time.perf_counter()
    cpp_extension.load(
        name="selective_scan_cuda",
        sources=[str(src / name) for name in _SOURCES],
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=[*_NVCC_FLAGS, f"-gencode=arch=compute_{cc},code=sm_{cc}"],
        extra_include_paths=[str(src)],
        build_directory=str(build),
        verbose=bool(os.environ.get("VERBOSE")),
    )
    print(f"built selective_scan_cuda for sm_{cc} in {time.perf_counter() - started:.0f} s")
    print(f"PYTHONPATH={build}:{root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
