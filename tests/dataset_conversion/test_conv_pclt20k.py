"""PCLT20K converter on a synthetic tree made here: PNG rules, every check, HU round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2_cipa.dataset_conversion import cli
from nnunetv2_cipa.dataset_conversion.errors import ConversionError, ConversionLog
from nnunetv2_cipa.dataset_conversion.pclt20k import PcltOptions, convert_pclt20k
from skimage.io import imsave

SIZE = 32
WINDOW = (-1200.0, -200.0)


def hu_phantom(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1400, 100, size=(SIZE, SIZE))  # beyond the window on both sides


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, array, check_contrast=False)


def write_item(root: Path, name: str, seed: int = 0, mask: np.ndarray | None = None, **override) -> None:
    folder = root / name.split("_")[0]
    hu = hu_phantom(seed)
    ct = np.round((np.clip(hu, *WINDOW) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]) * 255).astype(np.uint8)
    pet = np.random.default_rng(seed + 1).integers(0, 256, size=(SIZE, SIZE), dtype=np.uint8)
    if mask is None:
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[8:16, 8:16] = 255 if seed % 2 == 0 else 0  # odd seeds: empty masks, which must be kept
    arrays = {"CT": ct, "PET": pet, "mask": mask, **override}
    for kind, arr in arrays.items():
        if arr is not None:
            write_png(folder / f"{name}_{kind}.png", arr)


def make_tree(root: Path, train=("0001_1", "0001_2", "0002_1", "0003_1"), test=("0004_1", "0004_2")) -> Path:
    for i, name in enumerate((*train, *test)):
        write_item(root, name, seed=i)
    (root / "train.txt").write_text("".join(f"{n}\r\n" for n in train) + "\n")  # CRLF and a blank line
    (root / "test.txt").write_text("\n".join(test))  # no trailing newline (CIPA's loader would cut a char)
    return root


def run(root: Path, target: Path, **options) -> tuple[dict, ConversionLog]:
    log = ConversionLog(quiet=True)
    overwrite = options.pop("overwrite", False)
    summary = convert_pclt20k(root, target, PcltOptions(**options), overwrite, log, progress=False)
    return summary, log


def test_converts_tree_roundtrips_hu_and_writes_nnunet_files(tmp_path):
    root = make_tree(tmp_path / "pclt")
    target = tmp_path / "raw" / "Dataset501_PCLT20K"
    summary, _ = run(root, target, pet_suv_max=10.0)
    assert summary["cases"] == {"train": 4, "test": 2}
    assert summary["parity"]["ours"]["pairs"] == 6 and summary["parity"]["paper"]["pairs"] == 21930

    ct = sitk.ReadImage(str(target / "imagesTr" / "0001_1_0000.nii.gz"))
    assert ct.GetDimension() == 2 and ct.GetPixelID() == sitk.sitkFloat32
    assert ct.GetSpacing() == pytest.approx((0.98, 0.98))
    hu = sitk.GetArrayFromImage(ct)
    expected = np.clip(hu_phantom(0), *WINDOW)
    assert np.abs(hu - expected).max() <= 1000 / 255 / 2 + 1e-3  # half a grey level
    assert hu.min() == WINDOW[0] and hu.max() == WINDOW[1]

    pet = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "imagesTr" / "0001_1_0001.nii.gz")))
    png = np.random.default_rng(1).integers(0, 256, size=(SIZE, SIZE), dtype=np.uint8)
    np.testing.assert_allclose(pet, png / 255 * 10.0, rtol=1e-6)

    label = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / "0001_1.nii.gz")))
    assert set(np.unique(label)) == {0, 1} and label.sum() == 64
    assert (target / "imagesTs" / "0004_1_0000.nii.gz").is_file() and (
        target / "labelsTs" / "0004_2.nii.gz"
    ).is_file()
    empty = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / "0001_2.nii.gz")))
    assert empty.sum() == 0  # empty masks kept

    ds = json.loads((target / "dataset.json").read_text())
    assert ds["numTraining"] == 4 and ds["channel_names"] == {"0": "zscore", "1": "zscore"}
    assert ds["cipa_conversion"]["pet_suv_max"] == 10.0
    splits = json.loads((target / "splits_final.json").read_text())
    patient = {"0001_1": "0001", "0001_2": "0001", "0002_1": "0002", "0003_1": "0003"}
    for fold in splits:
        assert not {patient[c] for c in fold["train"]} & {patient[c] for c in fold["val"]}
    assert sorted(c for f in splits for c in f["val"]) == sorted(patient)
    manifest = json.loads((target / "conversion_manifest.json").read_text())
    assert manifest["summary"]["empty_mask_fraction"]["train"] == 0.5


def test_pet_without_scale_is_png_fraction(tmp_path):
    target = tmp_path / "Dataset501_PCLT20K"
    run(make_tree(tmp_path / "pclt"), target)
    pet = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "imagesTr" / "0001_1_0001.nii.gz")))
    assert 0 <= pet.min() and pet.max() <= 1
    conversion = json.loads((target / "dataset.json").read_text())["cipa_conversion"]
    assert "png_fraction" in conversion["pet_units"] and conversion["pet_unit"] == "unitless"


def test_mask_rules(tmp_path):
    root = make_tree(tmp_path / "pclt", train=("0001_1", "0002_1"), test=("0003_1",))
    soft = np.zeros((SIZE, SIZE), np.uint8)
    soft[0:4, 0:4], soft[4:8, 4:8] = 127, 128  # anti-aliased edge: 128 is tumour, 127 is not
    write_item(root, "0001_1", mask=soft)
    binary01 = np.zeros((SIZE, SIZE), np.uint8)
    binary01[2:5, 2:5] = 1  # a {0,1} mask would be erased by the >= 128 rule
    write_item(root, "0002_1", mask=binary01)
    target = tmp_path / "out"
    _, log = run(root, target)
    soft_label = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / "0001_1.nii.gz")))
    assert soft_label.sum() == 16 and soft_label[4:8, 4:8].all()
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / "0002_1.nii.gz"))).sum() == 9
    messages = " ".join(w["message"] for w in log.warnings)
    assert "values other than 0/255" in messages and "{0, 1}" in messages


def test_png_modes(tmp_path):
    root = make_tree(tmp_path / "pclt", train=("0001_1", "0002_1"), test=("0003_1",))
    grey = np.full((SIZE, SIZE), 100, np.uint8)
    write_item(root, "0001_1", PET=np.stack([grey] * 3 + [np.full_like(grey, 255)], axis=-1))  # RGBA, equal
    _, log = run(root, tmp_path / "ok")
    assert any("4-channel PNG" in w["message"] for w in log.warnings)

    rgb = np.stack([grey, grey, grey + 1], axis=-1)
    write_item(root, "0001_1", PET=rgb)
    with pytest.raises(ConversionError, match="0001_1_PET.png: colour PNG"):
        run(root, tmp_path / "colour")

    write_item(root, "0001_1", PET=np.full((SIZE, SIZE), 65535, np.uint16))
    with pytest.raises(ConversionError, match="16-bit PNG"):
        run(root, tmp_path / "sixteen")
    run(root, tmp_path / "sixteen_ok", allow_16bit=True)
    pet = sitk.GetArrayFromImage(
        sitk.ReadImage(str(tmp_path / "sixteen_ok" / "imagesTr" / "0001_1_0001.nii.gz"))
    )
    assert pet.max() == pytest.approx(1.0)


def test_shape_rules(tmp_path):
    root = make_tree(tmp_path / "pclt", train=("0001_1", "0002_1"), test=("0003_1",))
    _, log = run(root, tmp_path / "a")
    assert any("not 512x512" in w["message"] for w in log.warnings)
    write_item(root, "0002_1", PET=np.zeros((SIZE, SIZE + 1), np.uint8))
    with pytest.raises(ConversionError, match="PNG shapes differ"):
        run(root, tmp_path / "b")


@pytest.mark.parametrize(
    "problem, message",
    [
        ("overlap_item", "also in train.txt"),
        ("overlap_patient", "patients have items in both lists"),
        ("missing_pet", "missing PET PNG of item '0002_1'"),
        ("missing_folder", "patient folder for item '0009_1' not found"),
        ("missing_list", "test.txt: split list not found"),
        ("empty_list", "split list is empty"),
    ],
)
def test_split_and_input_errors(tmp_path, problem, message):
    root = make_tree(tmp_path / "pclt", train=("0001_1", "0002_1"), test=("0003_1",))
    if problem == "overlap_item":
        (root / "test.txt").write_text("0003_1\n0001_1\n")
    elif problem == "overlap_patient":
        write_item(root, "0001_9")
        (root / "test.txt").write_text("0003_1\n0001_9\n")
    elif problem == "missing_pet":
        (root / "0002" / "0002_1_PET.png").unlink()
    elif problem == "missing_folder":
        (root / "train.txt").write_text("0001_1\n0009_1\n")
    elif problem == "missing_list":
        (root / "test.txt").unlink()
    elif problem == "empty_list":
        (root / "test.txt").write_text("\n \n")
    with pytest.raises(ConversionError, match=message):
        run(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_warnings_for_duplicates_orphans_and_moved_folders_and_skip_incomplete(tmp_path):
    root = make_tree(tmp_path / "pclt", train=("0001_1", "0002_1"), test=("0003_1",))
    (root / "train.txt").write_text("0001_1\n0001_1\n0002_1\n0005_1\n")
    write_item(root / "nested", "0005_1")  # not in <root>/0005: found by search, with a warning
    write_item(root, "0006_1")  # in no list
    (root / "0002" / "0002_1_PET.png").unlink()
    with pytest.raises(ConversionError, match="missing PET"):
        run(root, tmp_path / "strict")
    summary, log = run(root, tmp_path / "out", skip_incomplete=True)
    messages = " ".join(w["message"] for w in log.warnings)
    for expected in ("1 duplicate item names", "instead of", "in no split list", "skipped: missing PET"):
        assert expected in messages
    assert summary["cases"] == {"train": 2, "test": 1}


def test_case_id_collision_after_sanitising(tmp_path):
    root = make_tree(tmp_path / "pclt", train=("0001_a b", "0001_a-b"), test=("0003_1",))
    with pytest.raises(ConversionError, match="collides"):
        run(root, tmp_path / "out")


def test_cli_refuses_non_empty_target_and_overwrites_on_request(tmp_path, nnunet_dirs, capsys):
    root = make_tree(tmp_path / "pclt")
    argv = ["pclt20k", str(root), "--dataset-id", "503", "--quiet"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "PCLT20K parity: pairs 6 (paper 21,930), patients 4 (paper 605)" in out
    assert cli.main(argv) == 1
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite", "--pet-suv-max", "5"]) == 0
    ds = json.loads((nnunet_dirs["nnUNet_raw"] / "Dataset503_PCLT20K" / "dataset.json").read_text())
    assert ds["cipa_conversion"]["pet_suv_max"] == 5.0
    assert cli.main(["pclt20k", str(root), "--dataset-id", "503", "--dataset-name", "Other", "--quiet"]) == 1
    assert "dataset id 503 is already used" in capsys.readouterr().err
    assert cli.main(["pclt20k", str(root), "--dataset-id", "504", "--ct-norm", "CT", "--quiet"]) == 1
    assert "collapses the channel" in capsys.readouterr().err


def test_interrupted_run_leaves_previous_dataset_intact(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "pclt")
    target = tmp_path / "raw" / "Dataset501_PCLT20K"
    run(root, target)
    before = sorted(p.name for p in (target / "imagesTr").iterdir())
    from nnunetv2_cipa.dataset_conversion import dataset_writer

    calls = {"n": 0}
    real = dataset_writer.write_image_atomic

    def failing_write(image, path):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of the second case
        real(image, path)

    monkeypatch.setattr(dataset_writer, "write_image_atomic", failing_write)
    with pytest.raises(KeyboardInterrupt):
        run(root, target, overwrite=True)
    assert sorted(p.name for p in (target / "imagesTr").iterdir()) == before
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no staging folder left
