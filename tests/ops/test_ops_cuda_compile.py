"""CPU-only compile check of the selective-scan CUDA sources (no GPU, no CUDA libraries needed).

* every kernel translation unit is compiled by nvcc to SASS for sm_80 and sm_90 (plus compute_90 PTX)
  with torch's default half/bf16 defines and ``-Xptxas -v``; the ptxas report is parsed and every
  kernel must have zero spill stores/loads and zero stack frame (the state lives in registers);
* the binding is compiled by g++ against the installed torch headers (``-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE``,
  since the CPU wheel lacks the CMake-generated c10/cuda header).

Run ``pytest tests/ops/test_ops_cuda_compile.py -s`` to see the register table (copied into
csrc/selective_scan/README.md). Linking and running need a CUDA machine (tests/ops/test_ops_cuda_kernel.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from nnunetv2_cipa._csrc import build_config

# torch's default nvcc defines: the kernels must not rely on implicit half/bf16 conversions.
TORCH_HALF_DEFINES = (
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
)
ARCHS = ("sm_80", "sm_90")
# kernels per translation unit: 3 state sizes (N <= 1, 4, 16) x output dtypes (1 for fp32, 2 otherwise)
EXPECTED_KERNELS = {name: 3 if "fp32" in name else 6 for name in build_config.KERNEL_SOURCES}

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def _find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    return None


def _cuda_include_dir(nvcc: str) -> Path | None:
    """The toolkit's include folder (holding cuda_runtime.h); nvcc may be a wrapper script elsewhere."""
    candidates = [Path(os.path.realpath(nvcc)).parent.parent / "include"]
    roots = (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda")
    candidates += [Path(root) / "include" for root in roots if root]
    return next((c for c in candidates if (c / "cuda_runtime.h").is_file()), None)


def parse_ptxas(report: str) -> list[dict]:
    """One dict per (kernel, arch): registers, stack frame, spill stores/loads."""
    rows: list[dict] = []
    current: dict | None = None
    for line in report.splitlines():
        if m := _ENTRY.search(line):
            current = {"kernel": m.group(1), "arch": m.group(2)}
            rows.append(current)
        elif current is not None and (m := _SPILL.search(line)):
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current is not None and (m := _REGS.search(line)):
            current["registers"] = int(m.group(1))
    return rows


def _short_name(mangled: str) -> str:
    """'..._kernelILi16E13__nv_bfloat16fEE...' -> 'bwd N<=16 bf16->fp32'."""
    direction = "fwd" if "fwd_kernel" in mangled else "bwd"
    n = re.search(r"kernelILi(\d+)E", mangled).group(1)
    tail = mangled.split(f"kernelILi{n}E", 1)[1]
    types = re.findall(r"13__nv_bfloat16|6__half|S2_|f", tail.split("EEv")[0])
    names = {"13__nv_bfloat16": "bf16", "6__half": "fp16", "f": "fp32"}
    in_t = names.get(types[0], "?") if types else "?"
    out_t = "?"
    if len(types) > 1:
        out_t = in_t if types[1] == "S2_" else names.get(types[1], "?")
    return f"{direction} N<={n} {in_t}->{out_t}"


@pytest.fixture(scope="module")
def nvcc() -> str:
    found = _find_nvcc()
    if found is None:
        pytest.skip("nvcc not found (PATH, CUDA_HOME, /usr/local/cuda): cannot compile-check the kernels")
    return found


@pytest.fixture(scope="module")
def kernel_reports(nvcc, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Compile all kernel TUs once (two at a time) and keep nvcc's output."""
    out_dir = tmp_path_factory.mktemp("nvcc")
    gencode = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=[sm_90,compute_90]"]

    def compile_one(path: Path) -> subprocess.CompletedProcess:
        cmd = [nvcc, "-c", "-std=c++17", "-O3", "--use_fast_math", *TORCH_HALF_DEFINES, *gencode,
               "-Xptxas", "-v", "-I", str(build_config.SOURCE_DIR), str(path),
               "-o", str(out_dir / f"{path.stem}.o")]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    paths = [build_config.SOURCE_DIR / name for name in build_config.KERNEL_SOURCES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(compile_one, paths))
    return {path.name: result for path, result in zip(paths, results, strict=True)}


@pytest.mark.nvcc
@pytest.mark.slow
def test_kernels_compile_for_sm80_sm90_without_spills(kernel_reports):
    table = []
    for name, result in kernel_reports.items():
        assert result.returncode == 0, f"nvcc failed on {name}:\n{result.stderr[-4000:]}"
        assert "warning" not in result.stderr.lower(), f"nvcc warnings in {name}:\n{result.stderr[-4000:]}"
        rows = parse_ptxas(result.stderr + result.stdout)
        for arch in ARCHS:
            kernels = [r for r in rows if r["arch"] == arch]
            assert len(kernels) == EXPECTED_KERNELS[name], f"{name}: {len(kernels)} kernels for {arch}"
        for row in rows:
            assert {"registers", "spill_stores", "spill_loads", "stack"} <= row.keys(), f"unparsed: {row}"
            assert row["spill_stores"] == 0 and row["spill_loads"] == 0, f"{name}: register spills in {row}"
            assert row["stack"] == 0, f"{name}: local-memory stack frame in {row}"
            table.append((_short_name(row["kernel"]), row["arch"], row["registers"]))
    print("\nkernel                      arch    registers (0 spills, 0 stack)")
    for kernel, arch, regs in sorted(set(table)):
        print(f"{kernel:27s} {arch:7s} {regs}")


@pytest.mark.nvcc
@pytest.mark.slow
def test_binding_compiles_against_torch_headers():
    """g++ host compile of binding.cpp against the installed torch's headers (catches torch API drift)."""
    torch = pytest.importorskip("torch")
    from torch.utils.cpp_extension import include_paths

    gxx = shutil.which("g++")
    nvcc = _find_nvcc()
    cuda_include = _cuda_include_dir(nvcc) if nvcc else None
    if gxx is None or cuda_include is None:
        pytest.skip("g++ or the CUDA toolkit's include folder (cuda_runtime.h) not found")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    cmd = [gxx, "-c", "-std=c++20", "-O0", "-fPIC", "-fsyntax-only", "-Wall", "-Wno-unused-function",
           "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", "-DTORCH_API_INCLUDE_EXTENSION_H",
           f"-DTORCH_EXTENSION_NAME={build_config.JIT_MODULE}", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
           *(f"-isystem{p}" for p in include_paths()), f"-isystem{cuda_include}",
           f"-isystem{sysconfig.get_paths()['include']}", f"-I{build_config.SOURCE_DIR}",
           str(build_config.SOURCE_DIR / build_config.BINDING_SOURCE)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"g++ failed on binding.cpp:\n{result.stderr[-4000:]}"
    assert "warning" not in result.stderr.lower(), f"g++ warnings in binding.cpp:\n{result.stderr[-4000:]}"


def test_parse_ptxas_reads_registers_and_spills():
    report = (
        "ptxas info    : Compiling entry function "
        "'_ZN13nnunetv2_cipa4scan25selective_scan_fwd_kernelILi4EffEEvNS_13ScanFwdParamsE' for 'sm_80'\n"
        "ptxas info    : Function properties for x\n"
        "    8 bytes stack frame, 12 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Used 95 registers, used 0 barriers, 472 bytes cmem[0]\n"
    )
    (row,) = parse_ptxas(report)
    assert row["arch"] == "sm_80" and row["registers"] == 95
    assert (row["stack"], row["spill_stores"], row["spill_loads"]) == (8, 12, 4)
    assert _short_name(row["kernel"]) == "fwd N<=4 fp32->fp32"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s", "-q"]))
