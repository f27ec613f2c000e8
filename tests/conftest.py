"""Test-wide safety: nnU-Net folders always point at a temporary directory; the ``gpu`` marker's skip.

Tests never touch a user's nnU-Net folders. The variables are set before any test imports
nnunetv2 (its paths are read at use time in 2.8, but set early anyway), and each test that needs
clean folders uses the ``nnunet_dirs`` fixture for its own fresh set.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="nnunetv2_cipa_tests_"))
for _name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ[_name] = str(_SESSION_ROOT / _name)
    (_SESSION_ROOT / _name).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("nnUNet_n_proc_DA", "0")
os.environ.setdefault("nnUNet_compile", "false")

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
STS_FIXTURE = SHARED_DIR / "fixtures" / "sts"


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    """Fresh nnUNet_raw / _preprocessed / _results under tmp_path, set in os.environ."""
    dirs = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        d = tmp_path / name
        d.mkdir()
        monkeypatch.setenv(name, str(d))
        dirs[name] = d
    return dirs


@pytest.fixture
def sts_fixture() -> Path:
    """The real TCIA STS_001 fixture in ../shared (skipped when absent; never copied)."""
    if not (STS_FIXTURE / "STS_001").is_dir():
        pytest.skip(f"STS fixture not found at {STS_FIXTURE}")
    return STS_FIXTURE


def pytest_collection_modifyitems(config, items):
    """Skip every test marked ``gpu`` when no CUDA device is present (the one place this is decided)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch  # only when a gpu test was collected: dataset-conversion runs stay torch-free

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in gpu_items:
        item.add_marker(skip)
