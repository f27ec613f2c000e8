"""Build, link and import the CUDA extension on a CPU-only machine, as far as that is possible.

Not a pytest test (it takes ~4 minutes on 2 cores): run it by hand after changing the binding or the
build flags::

    .venv/bin/python tests/ops/cuda_cpu_import_check.py [build_dir]

Steps and what each proves:

1. ``torch.utils.cpp_extension.load`` with torch's own ninja rules and flags (``CUDA_HOME`` pointed at
   the local toolkit, ``-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE`` for the CPU wheel's headers): every object
   compiles; only the link fails, on ``-lc10_cuda``/``-ltorch_cuda``, which the CPU wheel lacks.
2. Relink the same objects without those two libraries plus a stub library defining the one *data*
   symbol of libc10_cuda the module references (data relocations cannot be resolved lazily); import
   with ``RTLD_LAZY``. Proves the pybind11 module registers, and that no symbol of ours is missing.
3. Call it through ``nnunetv2_cipa.ops.cuda_backend`` with CPU tensors: the Python call convention
   (argument count, ``None`` for optional tensors) matches the C++ signatures, and the binding's first
   check answers with its message. No kernel runs: that needs a GPU (test_ops_cuda_kernel.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from nnunetv2_cipa._csrc import build_config
from torch.utils import cpp_extension

from nnunetv2_cipa.ops import cuda_backend

STUB = """#include <c10/cuda/CUDACachingAllocator.h>
namespace c10::cuda::CUDACachingAllocator { std::atomic<CUDAAllocator*> allocator; }
"""


def toolkit_root() -> Path | None:
    """The CUDA toolkit folder (bin/nvcc + include/cuda_runtime.h); nvcc on PATH may be a wrapper script."""
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    if nvcc:
        candidates.append(str(Path(os.path.realpath(nvcc)).parents[1]))
    for root in filter(None, candidates):
        if (Path(root) / "bin" / "nvcc").is_file() and (Path(root) / "include" / "cuda_runtime.h").is_file():
            return Path(root)
    return None


def main(build_dir: Path) -> int:
    cuda_home = toolkit_root()
    if cuda_home is None:
        print("SKIPPED: no CUDA toolkit (nvcc and include/cuda_runtime.h) found")
        return 0
    cpp_extension.CUDA_HOME = str(cuda_home)
    define = "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE"
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        cpp_extension.load(
            name=build_config.JIT_MODULE, sources=[str(p) for p in build_config.source_paths()],
            extra_cflags=[*build_config.CXX_FLAGS, define],
            extra_cuda_cflags=[*build_config.nvcc_flags(build_config.DEFAULT_ARCH_LIST), define],
            build_directory=str(build_dir), verbose=False)
        print("step 1: linked against CUDA torch libraries (this torch has them)")
    except RuntimeError as exc:
        linker = [line for line in str(exc).splitlines() if "cannot find" in line]
        print(f"step 1: link failed (expected on a CPU wheel): {linker or str(exc)[-2000:]}")
    kernel_objects = [build_dir / f"{Path(s).stem}.cuda.o" for s in build_config.KERNEL_SOURCES]
    objects = [build_dir / "binding.o", *kernel_objects]
    missing = [str(o) for o in objects if not o.is_file()]
    if missing:
        print(f"FAILED: objects missing after step 1: {missing}")
        return 1

    torch_dir = Path(torch.__file__).parent
    stub_src = build_dir / "stub_c10_cuda.cpp"
    stub_src.write_text(STUB)
    includes = [f"-isystem{p}" for p in cpp_extension.include_paths()] + [f"-isystem{cuda_home / 'include'}"]
    subprocess.run(["c++", "-shared", "-fPIC", "-std=c++20", define, *includes, str(stub_src),
                    "-o", str(build_dir / "libstub_c10_cuda.so")], check=True)
    module_path = build_dir / f"{build_config.JIT_MODULE}.so"
    subprocess.run(["c++", *map(str, objects), "-shared", f"-L{torch_dir / 'lib'}", "-lc10", "-ltorch_cpu",
                    "-ltorch", "-ltorch_python", f"-L{cuda_home / 'lib64'}", "-lcudart", f"-L{build_dir}",
                    "-lstub_c10_cuda", f"-Wl,-rpath,{build_dir}", "-o", str(module_path)], check=True)
    undefined = subprocess.run(["nm", "-D", "--undefined-only", "-C", str(module_path)],
                               capture_output=True, text=True, check=True).stdout
    ours = [line for line in undefined.splitlines() if "nnunetv2_cipa" in line]
    if ours:
        print(f"FAILED: symbols of ours are undefined: {ours}")
        return 1
    sys.setdlopenflags(os.RTLD_LAZY | os.RTLD_GLOBAL)
    sys.path.insert(0, str(build_dir))
    ext = __import__(build_config.JIT_MODULE)
    print(f"step 2: imported {module_path.name}; max_dstate={ext.max_dstate}, chunk_items={ext.chunk_items}")

    cuda_backend._tried, cuda_backend._module = True, ext  # what load_extension() returns on a GPU machine
    u, B = torch.randn(1, 2, 5), torch.randn(1, 1, 4, 5)
    calls = {
        "selective_scan_cuda (no optional tensors)": lambda: cuda_backend.selective_scan_cuda(
            u, u, -torch.rand(2, 4), B, B),
        "selective_scan_cuda (all arguments)": lambda: cuda_backend.selective_scan_cuda(
            u, u, -torch.rand(2, 4), B, B, torch.ones(2), torch.ones(2), True, True, True),
        "ext.bwd": lambda: ext.bwd(u, u, -torch.rand(2, 4), B, B, None, None, u, torch.zeros(1, 2, 1, 4),
                                   None, False),
    }
    for name, call in calls.items():
        try:
            call()
        except RuntimeError as exc:
            message = str(exc).splitlines()[0]
            if "u must be a CUDA tensor" not in message:
                print(f"FAILED: {name}: unexpected error {message}")
                return 1
            print(f"step 3: {name}: reached the binding's checks ({message})")
        else:
            print(f"FAILED: {name} accepted CPU tensors")
            return 1
    print("OK")
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="scan_cpu_import_"))
    sys.exit(main(target))
