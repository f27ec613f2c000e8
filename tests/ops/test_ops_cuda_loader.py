"""The CUDA loader and the build configuration behave on a machine without CUDA (always run, fast).

The loader's promise: importing it touches no CUDA, ``load_extension()`` never raises, returns None
with one log line saying why, and the autograd entry point raises a clear error instead.
"""

from __future__ import annotations

import logging

import pytest
import torch
from nnunetv2_cipa._csrc import build_config
from torch.utils import cpp_extension

from nnunetv2_cipa.ops import cuda_backend

LOGGER = "nnunetv2_cipa.ops.cuda_backend"


@pytest.fixture(autouse=True)
def fresh_loader():
    cuda_backend.reset_loader()
    yield
    cuda_backend.reset_loader()


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the extension may load")
def test_loader_returns_none_and_logs_once_without_cuda(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert cuda_backend.load_extension() is None
    assert cuda_backend.load_extension() is None
    messages = _warnings(caplog)
    assert len(messages) == 1, messages
    assert cuda_backend.unavailable_reason() and cuda_backend.unavailable_reason() in messages[0]
    assert not torch.cuda.is_initialized()


def test_jit_disabled_by_environment(monkeypatch, caplog):
    """CUDA pretended present, no prebuilt module, NNUNETV2_CIPA_CUDA_JIT=0: None, and the reason says so."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(cuda_backend.ENV_JIT, "0")
    monkeypatch.setattr(cpp_extension, "load", lambda **_: pytest.fail("the JIT build must not run"))
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert cuda_backend.load_extension() is None
    reason = cuda_backend.unavailable_reason()
    assert build_config.AOT_MODULE in reason and f"{cuda_backend.ENV_JIT}=0" in reason
    assert len(_warnings(caplog)) == 1


def test_failed_jit_build_is_reported_not_raised(monkeypatch, tmp_path, caplog):
    def broken_load(**_):
        raise OSError("linker: cannot find -lc10_cuda")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv(cuda_backend.ENV_JIT, raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", "/usr/local/cuda")
    monkeypatch.setattr(cpp_extension, "load", broken_load)
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert cuda_backend.load_extension() is None
    assert "OSError: linker: cannot find -lc10_cuda" in cuda_backend.unavailable_reason()
    assert len(_warnings(caplog)) == 1


def test_autograd_entry_raises_clearly_without_extension(monkeypatch):
    monkeypatch.setattr(cuda_backend, "_load", lambda: (None, "test: no extension"))
    u = torch.randn(1, 2, 5)
    B = torch.randn(1, 1, 4, 5)
    with pytest.raises(RuntimeError, match="unavailable: test: no extension"):
        cuda_backend.selective_scan_cuda(u, u, -torch.rand(2, 4), B, B)


def test_state_size_above_compiled_maximum_is_rejected():
    n = cuda_backend.MAX_STATE + 1
    u = torch.randn(1, 2, 5)
    B = torch.randn(1, 1, n, 5)
    with pytest.raises(ValueError, match="exceed the compiled maximum"):
        cuda_backend.selective_scan_cuda(u, u, -torch.rand(2, n), B, B)


def test_jit_build_directory_is_inside_the_checkout(monkeypatch):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    folder = cuda_backend.build_directory(build_config.SOURCE_DIR)
    root = build_config.SOURCE_DIR.parent.parent
    if (root / "pyproject.toml").is_file():  # editable install from a checkout
        assert folder.is_relative_to(root / "build" / "torch_extensions")


def test_build_config_sources_exist():
    paths = build_config.source_paths()
    assert [p.name for p in paths] == [build_config.BINDING_SOURCE, *build_config.KERNEL_SOURCES]
    assert all(p.is_file() for p in paths)
    headers = {p.name for p in build_config.SOURCE_DIR.iterdir() if p.suffix in (".h", ".cuh")}
    assert {"selective_scan.h", "scan_common.cuh", "scan_fwd.cuh", "scan_bwd.cuh"} <= headers


def test_arch_flags_default_override_and_errors(monkeypatch):
    monkeypatch.delenv(build_config.ENV_ARCH_LIST, raising=False)
    assert build_config.gencode_flags(build_config.arch_list_from_env()) == [
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_90,code=compute_90",
    ]
    monkeypatch.setenv(build_config.ENV_ARCH_LIST, "8.6 8.9")
    assert build_config.gencode_flags(build_config.arch_list_from_env()) == [
        "-gencode=arch=compute_86,code=sm_86",
        "-gencode=arch=compute_89,code=sm_89",
    ]
    with pytest.raises(ValueError, match="TORCH_CUDA_ARCH_LIST"):
        build_config.gencode_flags("Hopper")
    assert not any("gencode" in f for f in build_config.nvcc_flags(None))  # JIT: torch picks the GPU


def test_cuda_extensions_empty_without_request_or_cuda(monkeypatch):
    monkeypatch.delenv(build_config.ENV_BUILD, raising=False)
    assert build_config.cuda_extensions() == ([], {})
    if torch.version.cuda is None:
        monkeypatch.setenv(build_config.ENV_BUILD, "1")
        assert build_config.cuda_extensions() == ([], {})
