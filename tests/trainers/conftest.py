"""The tests-only trainer folder (``ext_trainers``), for nnU-Net's lookup and for direct use."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

EXT_TRAINERS = Path(__file__).resolve().parent / "ext_trainers"


def with_test_trainers(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the tests' trainer folder first in ``nnUNet_extTrainer`` (the plugin's stays after)."""
    parts = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    return {**env, "nnUNet_extTrainer": os.pathsep.join([str(EXT_TRAINERS), *parts])}


@pytest.fixture(scope="session")
def smoke_trainer() -> type:
    """``nnUNetTrainerCIPA_small_smoke`` imported from the tests' trainer folder."""
    path = EXT_TRAINERS / "cipa_test_trainers.py"
    spec = importlib.util.spec_from_file_location("cipa_test_trainers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.nnUNetTrainerCIPA_small_smoke


@pytest.fixture(scope="session")
def ext_trainer_env():
    """A function adding the tests' trainer folder to an environment dict (for subprocesses)."""
    return with_test_trainers


@pytest.fixture(scope="session")
def chain_environment():
    """A function giving the environment of an nnU-Net command chain under ``root``: fresh nnU-Net
    folders there, the tests' trainers, no compilation, and one worker everywhere (on 2 cores nnU-Net's
    default 8 export/preprocessing workers only add overhead)."""

    def make(root: Path) -> dict[str, str]:
        env = with_test_trainers({k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")})
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (root / name).mkdir()
            env[name] = str(root / name)
        single_workers = {"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "2"}
        env.update({"nnUNet_compile": "false", **single_workers})
        return env

    return make
