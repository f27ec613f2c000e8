"""How nnU-Net finds our trainers: the .pth line, the fallback re-export, the short-schedule names."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from nnunetv2_cipa.architectures import PRESETS
from nnunetv2_cipa.trainers import discovery, short_schedules, variants
from nnunetv2_cipa.trainers.short_schedules import schedule_trainer_name
from nnunetv2_cipa.trainers.variants import nnUNetTrainerCIPA, nnUNetTrainerCIPA_small


def test_every_exported_trainer_resolves_to_itself_and_survives_nnunet_folder_names():
    """The names nnU-Net looks up (re-export module, short schedules) give that class, and a results
    folder name built from them parses back into the same (trainer, plans, configuration)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.file_path_utilities import (
        convert_identifier_to_trainer_plans_config,
        convert_trainer_plans_config_to_identifier,
    )

    sys.path.insert(0, str(discovery.ext_folder()))
    try:
        import nnunetv2_cipa_trainers as shim  # noqa: PLC0415 - imported as nnU-Net imports it
    finally:
        sys.path.pop(0)
    names = [*variants.__all__, schedule_trainer_name("nnUNetTrainerCIPA_small", 3, 2)]
    for name in names:
        trainer = getattr(shim, name)
        assert issubclass(trainer, nnUNetTrainer) and trainer.__name__ == name
        identifier = convert_trainer_plans_config_to_identifier(name, "nnUNetPlans", "2d")
        assert convert_identifier_to_trainer_plans_config(identifier) == [name, "nnUNetPlans", "2d"]


def test_short_schedule_trainers_are_made_by_name_and_pickle():
    name = schedule_trainer_name("nnUNetTrainerCIPA_small", 12, 20)
    assert name == "nnUNetTrainerCIPA_small_12epochs_20iters"
    trainer = short_schedules.schedule_trainer(name)
    assert issubclass(trainer, nnUNetTrainerCIPA_small) and trainer.cipa_config == PRESETS["small"]
    assert (trainer.cipa_num_epochs, trainer.cipa_iterations_per_epoch) == (12, 20)
    assert trainer.cipa_val_iterations_per_epoch == short_schedules.VALIDATION_ITERATIONS
    import nnunetv2_cipa.trainers as trainers_package

    assert getattr(trainers_package, name) is trainer is getattr(short_schedules, name)
    assert pickle.loads(pickle.dumps(trainer)) is trainer
    no_dcim = short_schedules.schedule_trainer("nnUNetTrainerCIPA_noDCIM_2epochs_1iters")
    assert no_dcim.cipa_config.dcim is False
    for bad in ("nnUNetTrainerCIPA_small_0epochs_20iters", "nnUNetTrainerCIPA_small_5epochs_2epochs_1iters",
                "nnUNetTrainerCIPA_large_2epochs_1iters", "nnUNetTrainerCIPA_small_12epochs"):
        assert short_schedules.schedule_trainer(bad) is None
        assert not hasattr(short_schedules, bad)
    with pytest.raises(ValueError, match="not a CIPA trainer"):
        schedule_trainer_name("nnUNetTrainer", 2, 1)


def test_nnunet_lookup_finds_a_short_schedule_in_a_fresh_interpreter():
    ok, detail = discovery.check_lookup("nnUNetTrainerCIPA_small_4epochs_3iters")
    assert ok, detail
    assert detail == "nnunetv2_cipa.trainers.short_schedules.nnUNetTrainerCIPA_small_4epochs_3iters"


def test_pth_line_is_guarded_and_extends_variable(tmp_path):
    folder = tmp_path / "ext"
    folder.mkdir()
    line = discovery.pth_text(folder)
    assert line.startswith("import ") and line.count("\n") == 1
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", discovery.OPT_OUT_ENV)}
    code = f"{line}\nimport os; print(os.environ.get('nnUNet_extTrainer'))"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == str(folder)
    env["nnUNet_extTrainer"] = "/somewhere"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == os.pathsep.join(["/somewhere", str(folder)])
    folder.rmdir()  # package gone: the line is inert
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "/somewhere"


def test_shim_is_harmless_without_the_package(tmp_path):
    """A shim left behind after `pip uninstall` must not break nnU-Net's lookup of other trainers."""
    shim = tmp_path / "leftover_shim.py"
    shim.write_text(discovery.SHIM_TEXT)
    blocker = tmp_path / "nnunetv2_cipa"  # a broken package shadows the real one, as if uninstalled
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError('gone', name='nnunetv2_cipa')\n")
    code = "import leftover_shim; print('ok', hasattr(leftover_shim, 'nnUNetTrainerCIPA'))"
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok False"


def test_ext_folder_module_reexports_the_same_classes():
    sys.path.insert(0, str(discovery.ext_folder()))
    try:
        import nnunetv2_cipa_trainers as shim  # noqa: PLC0415 - imported as nnU-Net imports it
    finally:
        sys.path.pop(0)
    assert shim.nnUNetTrainerCIPA is nnUNetTrainerCIPA
    assert shim.nnUNetTrainerCIPA.__module__ == "nnunetv2_cipa.trainers.cipa_trainer"


def test_fallback_reexport_finds_trainers_of_ext_folders_in_a_fresh_interpreter(tmp_path, monkeypatch):
    """Where nnU-Net's walk crashes before nnUNet_extTrainer, the re-export answers for those folders;
    elsewhere nnU-Net finds them itself. Either way a user's own variant in their folder resolves."""
    (tmp_path / "my_cipa_variants.py").write_text(
        "from nnunetv2_cipa.trainers.variants import nnUNetTrainerCIPA_small\n\n\n"
        "class nnUNetTrainerCIPA_small_myVariant(nnUNetTrainerCIPA_small):\n"
        "    cipa_initial_lr = 1e-3\n"
    )
    code = (
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f\n"
        "c = f('nnUNetTrainerCIPA_small_myVariant'); print(c.__name__, c.cipa_initial_lr)\n"
    )
    env = {**os.environ, "nnUNet_extTrainer": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "nnUNetTrainerCIPA_small_myVariant 0.001"
    from nnunetv2_cipa.trainers.fallback_lookup import find_trainer

    monkeypatch.setenv("nnUNet_extTrainer", str(tmp_path))
    assert find_trainer("nnUNetTrainerCIPA_small_myVariant").cipa_initial_lr == 1e-3
    assert find_trainer("nnUNetTrainerCIPA_small_noSuchVariant") is None
    assert find_trainer("not_a_trainer") is None

