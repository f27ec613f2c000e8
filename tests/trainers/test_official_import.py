"""``nnunetv2_cipa import-official``: the model folder, nnU-Net's view of it, refusals, fine-tuning, predict.

The stand-in for ``CIPA.pth`` has the official names, shapes and dtypes (from the in-repo key list) and
random values; the PCLT20K-style case is converted by the project's own ``convert pclt20k``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2_cipa.dataset_conversion import cli as convert_cli
from nnunetv2_cipa.dataset_conversion.pclt20k import PcltOptions

from nnunetv2_cipa.architectures import build_cipa
from nnunetv2_cipa.architectures.official import MappingReport
from nnunetv2_cipa.commands import official_import
from nnunetv2_cipa.plans.network_entry import CIPA_PLANS_KEY
from nnunetv2_cipa.synthetic.pclt20k_tree import TreeSpec, write_pclt20k_tree
from nnunetv2_cipa.trainers.official_model import (
    DEFAULT_SPACING_MM,
    LABELS,
    OfficialModel,
    official_dataset_json,
    official_plans,
    write_model_folder,
)
from nnunetv2_cipa.trainers.variants import nnUNetTrainerCIPA

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "architectures"))
from official_fixture import save_official_file  # noqa: E402

DATASET_ID = 990
FOLDER = f"Dataset{DATASET_ID}_CIPAofficial/nnUNetTrainerCIPA__nnUNetPlans__2d"
BIN = Path(sys.executable).parent
HELD_OUT = "0001_1"  # the one item of the synthetic tree's test patient


def _import(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = official_import.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def official_file(tmp_path_factory) -> Path:
    return save_official_file(tmp_path_factory.mktemp("release") / "CIPA.pth", seed=5, with_args=True)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, official_file):
    results = tmp_path_factory.mktemp("results")
    code, out, err = _import(
        [str(official_file), "--dataset-id", str(DATASET_ID), "--results-dir", str(results)]
    )
    assert code == 0, err
    return {"folder": results / FOLDER, "stdout": out, "stderr": err, "results": results}


def test_model_folder_is_complete_and_nnunet_reads_it(imported):
    folder = imported["folder"]
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert names == [
        "dataset.json",
        "dataset_fingerprint.json",
        "fold_all/checkpoint_final.pth",
        "fold_all/official_import_report.json",
        "fold_all/official_import_report.txt",
        "plans.json",
    ]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "staging left behind"
    checkpoint = torch.load(folder / "fold_all/checkpoint_final.pth", weights_only=True)
    assert checkpoint["trainer_name"] == "nnUNetTrainerCIPA"
    assert checkpoint["init_args"]["configuration"] == "2d"
    assert checkpoint["inference_allowed_mirroring_axes"] is None

    plans = json.loads((folder / "plans.json").read_text())
    config = plans["configurations"]["2d"]
    assert config["patch_size"] == [512, 512] and config["normalization_schemes"] == ["CTNormalization"] * 2
    reference = json.loads((folder / "plans.json").read_text())
    del reference["configurations"]["2d"][CIPA_PLANS_KEY]
    nnUNetTrainerCIPA._force_cipa_plans(reference, "2d")  # the trainer's own entry, not a copy of it
    assert config[CIPA_PLANS_KEY] == reference["configurations"]["2d"][CIPA_PLANS_KEY]
    dataset_json = json.loads((folder / "dataset.json").read_text())
    labels = PlansManager(plans).get_label_manager(dataset_json)
    assert labels.has_regions and labels.num_segmentation_heads == 1 and dataset_json["labels"] == LABELS

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), ("all",))  # strict load, as nnUNetv2_predict
    assert predictor.allowed_mirroring_axes is None
    assert not predictor.network.decoder.deep_supervision
    weights = checkpoint["network_weights"]
    assert all(torch.equal(v, weights[k]) for k, v in predictor.network.state_dict().items())


def test_report_is_printed_and_stored_beside_the_checkpoint(imported):
    folder = imported["folder"]
    text = (folder / "fold_all/official_import_report.txt").read_text()
    data = json.loads((folder / "fold_all/official_import_report.json").read_text())
    assert data["tensors_mapped"] == 848 and len(data["mapping"]) == 848
    assert sorted(data["zero_filled"]) == sorted(
        f"decoder.aux_heads.{i}.{p}" for i in range(3) for p in ("weight", "bias")
    )
    assert data["ignored_entries"] == ["args", "epoch", "optimizer", "scaler"]
    assert data["training_args"]["lr"] == 6e-5 and len(data["sha256"]) == 64
    assert data["input"]["pet_window"] == [0.0, 1.0] and data["input"]["ct_window_hu"] == [-1200.0, -200.0]
    row = next(r for r in data["mapping"] if r["official"] == "backbone.vssm.patch_embed.0.weight")
    assert row == {
        "official": "backbone.vssm.patch_embed.0.weight",
        "ours": "encoder.patch_embed.proj.weight",
        "official_shape": [96, 3, 4, 4],
        "our_shape": [96, 1, 4, 4],
    }
    line = "backbone.cross_mamba.2.channel_weights.mlp.3.A_logs [192, 16] -> crm.2.mixer.ssm.A_logs [192, 16]"
    assert line in text.splitlines()
    assert "848 official tensors mapped 1:1" in imported["stdout"]
    assert "summed over its input channels" in imported["stdout"]
    assert "PET scale is not published" in imported["stderr"]


def test_pet_suv_max_sets_and_records_the_pet_window():
    plans = official_plans("Dataset990_X", pet_suv_max=8.0, spacing_mm=DEFAULT_SPACING_MM)
    pet = plans["foreground_intensity_properties_per_channel"]["1"]
    assert (pet["percentile_00_5"], pet["percentile_99_5"], pet["mean"], pet["std"]) == (0.0, 8.0, 4.0, 2.5)
    recorded = official_dataset_json(8.0, {})
    assert recorded["cipa_official_import"]["pet_window"] == [0.0, 8.0]
    assert "not published" in recorded["cipa_official_import"]["pet_assumption"]
    assert DEFAULT_SPACING_MM == PcltOptions().spacing_mm  # converted PCLT20K cases are not resampled


@pytest.fixture(scope="module")
def pclt20k(tmp_path_factory):
    root = tmp_path_factory.mktemp("pclt")
    tree = root / "PCLT20K"
    write_pclt20k_tree(tree, TreeSpec(patients=2, slices=1, test_patients=1))
    converted = {}
    for label, extra in (("raw", []), ("suv", ["--pet-suv-max", "8"])):
        raw = root / f"nnUNet_raw_{label}"
        argv = ["pclt20k", str(tree), "--dataset-id", "501", "--raw-dir", str(raw), "--quiet", *extra]
        assert convert_cli.main(argv) == 0
        converted[label] = raw / "Dataset501_PCLT20K" / "imagesTs"
    return tree, converted


def _official_input(tree: Path, name: str) -> np.ndarray:
    """pred.py's mapping v / 255 * 3.2 - 1.6, stacked in our channel order (CT, PET)."""
    from skimage.io import imread

    folder = tree / name.split("_")[0]
    grey = [imread(folder / f"{name}_{kind}.png").astype(np.float32) for kind in ("CT", "PET")]
    return np.stack([g / 255.0 * 3.2 - 1.6 for g in grey])


@pytest.mark.parametrize("pet_suv_max", [None, 8.0])
def test_nnunet_preprocessing_of_a_converted_pclt20k_case_is_the_official_input(pclt20k, pet_suv_max):
    tree, converted = pclt20k
    images = converted["raw" if pet_suv_max is None else "suv"]
    plans = official_plans("Dataset990_X", pet_suv_max, DEFAULT_SPACING_MM)
    dataset_json = official_dataset_json(pet_suv_max, {})
    manager = PlansManager(plans)
    configuration = manager.get_configuration("2d")
    files = [str(images / f"{HELD_OUT}_000{c}.nii.gz") for c in (0, 1)]
    data, _, properties = configuration.preprocessor_class(verbose=False).run_case(
        files, None, manager, configuration, dataset_json
    )
    assert data.shape == (2, 1, 512, 512)  # no crop, no resampling
    np.testing.assert_allclose(data[:, 0], _official_input(tree, HELD_OUT), rtol=0, atol=1e-5)


def test_refusals_write_nothing(tmp_path, official_file):
    results = tmp_path / "results"
    bad = tmp_path / "CIPA.pth"
    bad.write_bytes(official_file.read_bytes()[:1000])
    code, _, err = _import([str(bad), "--dataset-id", "991", "--results-dir", str(results)])
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("nnunetv2_cipa import-official: error: ") and str(bad) in err
    assert not results.exists()
    code, _, err = _import(
        [str(official_file), "--dataset-id", "991", "--pet-suv-max", "0", "--results-dir", str(results)]
    )
    assert code == 2 and "--pet-suv-max 0.0 must be > 0" in err and not results.exists()


def test_refuses_an_existing_folder_and_a_dataset_id_of_another_dataset(
    imported, official_file, monkeypatch, tmp_path
):
    code, _, err = _import(
        [str(official_file), "--dataset-id", str(DATASET_ID), "--results-dir", str(imported["results"])]
    )
    assert code == 2 and "exists (pass --overwrite" in err
    raw = tmp_path / "raw"
    (raw / "Dataset992_PCLT20K").mkdir(parents=True)
    monkeypatch.setenv("nnUNet_raw", str(raw))
    code, _, err = _import(
        [str(official_file), "--dataset-id", "992", "--results-dir", str(tmp_path / "results")]
    )
    assert code == 2 and "dataset id 992 is already used by" in err and not (tmp_path / "results").exists()


def test_model_folder_is_staged_and_a_failed_write_leaves_the_previous_state(tmp_path):
    def model(checkpoint: dict) -> OfficialModel:
        return OfficialModel({}, {}, {}, checkpoint, MappingReport())

    unpicklable = model({"network_weights": lambda: None})
    target = tmp_path / "results" / "Dataset001_X" / "nnUNetTrainerCIPA__nnUNetPlans__2d"
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        write_model_folder(unpicklable, target, "report", {})
    assert not (tmp_path / "results" / "Dataset001_X").exists()
    target.mkdir(parents=True)
    (target / "previous").write_text("kept")
    with pytest.raises(Exception):  # noqa: B017
        write_model_folder(unpicklable, target, "report", {}, overwrite=True)
    assert (target / "previous").read_text() == "kept"
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    with pytest.raises(FileExistsError):
        write_model_folder(model({}), target, "report", {})
    write_model_folder(model({"current_epoch": 0}), target, "report", {}, overwrite=True)
    assert not (target / "previous").exists() and (target / "fold_all" / "checkpoint_final.pth").is_file()
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_checkpoint_is_accepted_by_nnunets_pretrained_weights_loader(imported):
    """Fine-tuning: ``nnUNetv2_train ... -tr nnUNetTrainerCIPA -pretrained_weights checkpoint_final.pth``."""
    folder = imported["folder"]
    plans = json.loads((folder / "plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    manager = PlansManager(plans)
    heads = manager.get_label_manager(dataset_json).num_segmentation_heads
    network = nnUNetTrainerCIPA.build_network_architecture(
        manager, manager.get_configuration("2d"), 2, heads, enable_deep_supervision=True
    )  # as the trainer builds it for training a dataset with the same labels
    with contextlib.redirect_stdout(io.StringIO()):
        load_pretrained_weights(network, str(folder / "fold_all/checkpoint_final.pth"))
    weights = torch.load(folder / "fold_all/checkpoint_final.pth", weights_only=True)["network_weights"]
    assert all(torch.equal(v, weights[k]) for k, v in network.state_dict().items())


@pytest.mark.slow
def test_stock_nnunetv2_predict_gives_the_official_probabilities(imported, pclt20k, tmp_path):
    """``nnUNetv2_predict`` on a converted case vs our network fed by hand with pred.py's normalisation.

    nnU-Net 2.8 accumulates the sliding-window logits in float16 (``predict_sliding_window_return_logits``:
    ``predicted_logits`` is ``torch.half``), so the command's probabilities carry float16 rounding: the
    network it builds is checked to 1e-5 in float32, the command's output to float16 precision.
    """
    tree, converted = pclt20k
    folder = imported["folder"]
    weights = torch.load(folder / "fold_all/checkpoint_final.pth", weights_only=True)["network_weights"]
    network = build_cipa("paper", num_classes=1)
    network.load_state_dict(weights)
    network.eval()
    with torch.no_grad():
        logits = network(torch.from_numpy(_official_input(tree, HELD_OUT))[None])[0, 0].numpy()
    expected = 1 / (1 + np.exp(-logits.astype(np.float64)))

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), ("all",))
    files = [str(converted["raw"] / f"{HELD_OUT}_000{c}.nii.gz") for c in (0, 1)]
    data, _, _ = predictor.configuration_manager.preprocessor_class(verbose=False).run_case(
        files, None, predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
    )
    predictor.network.eval()  # as nnU-Net's predict_logits_from_preprocessed_data does
    with torch.no_grad():
        ours = torch.sigmoid(predictor.network(torch.from_numpy(data[:, 0])[None]))[0, 0].double().numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)

    env = {**os.environ, "nnUNet_results": str(imported["results"]), "nnUNet_def_n_proc": "1"}
    env.update({"nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "pre")})
    out = tmp_path / "pred"
    command = [
        str(BIN / "nnUNetv2_predict"),
        "-i",
        str(converted["raw"]),
        "-o",
        str(out),
        "-d",
        str(DATASET_ID),
    ]
    command += ["-c", "2d", "-f", "all", "-tr", "nnUNetTrainerCIPA", "-device", "cpu", "--save_probabilities"]
    command += ["-npp", "1", "-nps", "1"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    probabilities = np.load(out / f"{HELD_OUT}.npz")["probabilities"]
    assert probabilities.shape == (1, 1, 512, 512)
    p = probabilities[0, 0].astype(np.float64)
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-2)  # float16 logits, worst at the tile corners
    centre = slice(64, 448)  # where the Gaussian weight is large: two float16 roundings of the logit
    got = np.log(p[centre, centre] / (1 - p[centre, centre]))
    assert np.all(np.abs(got - logits[centre, centre]) <= 2.0**-10 * (1 + np.abs(logits[centre, centre])))
    import SimpleITK as sitk

    segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{HELD_OUT}.nii.gz")))
    clear = np.abs(expected - 0.5) > 1e-2
    assert np.array_equal(segmentation[clear], (expected > 0.5)[clear].astype(segmentation.dtype))
