"""Worker pool, compression, PCLT20K volumes and 2.5D context channels, on synthetic PCLT20K trees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2_cipa.dataset_conversion import cli
from nnunetv2_cipa.dataset_conversion.context_slices import channel_names, shifted_stack
from nnunetv2_cipa.dataset_conversion.errors import ConversionError, ConversionLog
from nnunetv2_cipa.dataset_conversion.pclt20k import PcltOptions, convert_pclt20k
from skimage.io import imsave

from nnunetv2_cipa.synthetic.pclt20k_tree import TreeSpec, write_pclt20k_tree

MANIFEST = "conversion_manifest.json"
RUN_DEPENDENT = ("created", "pid", "num_processes")  # manifest keys that name the run, not the data


def small_tree(root: Path, patients: int = 4, slices: int = 5) -> Path:
    write_pclt20k_tree(root, TreeSpec(patients=patients, slices=slices, size=64, test_patients=1))
    return root


def convert(
    root: Path, target: Path, np_: int = 1, compression: int = 1, **options
) -> tuple[dict, ConversionLog]:
    log = ConversionLog(quiet=True)
    summary = convert_pclt20k(
        root,
        target,
        PcltOptions(**options),
        False,
        log,
        progress=False,
        num_processes=np_,
        compression=compression,
    )
    return summary, log


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def manifest_without_run_keys(folder: Path) -> dict:
    manifest = json.loads((folder / MANIFEST).read_text())
    return {k: v for k, v in manifest.items() if k not in RUN_DEPENDENT}


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.parametrize("options", [{}, {"as_volumes": True, "context_slices": 1}])
def test_two_workers_write_the_same_bytes_as_one(tmp_path, options):
    root = small_tree(tmp_path / "pclt")
    one, two = tmp_path / "one" / "Dataset501_PCLT20K", tmp_path / "two" / "Dataset501_PCLT20K"
    _, log1 = convert(root, one, 1, **options)
    _, log2 = convert(root, two, 2, **options)
    a, b = files_of(one), files_of(two)
    a.pop(MANIFEST), b.pop(MANIFEST)
    assert a.keys() == b.keys() and len(a) > 10
    assert [k for k in a if a[k] != b[k]] == []
    assert manifest_without_run_keys(one) == manifest_without_run_keys(two)
    # every worker's warnings reach the manifest (each 64x64 item warns that it is not 512x512)
    warned = {w["case"] for w in log2.warnings if "not 512x512" in w["message"]}
    assert len(warned) == 4 * 5 and log1.warnings == log2.warnings


def test_first_worker_error_names_the_file_and_leaves_nothing(tmp_path):
    root = small_tree(tmp_path / "pclt")
    broken = root / "0003" / "0003_2_PET.png"
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated PNG
    target = tmp_path / "raw" / "Dataset501_PCLT20K"
    with pytest.raises(ConversionError, match="0003_2_PET.png"):
        convert(root, target, 2)
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_killed_run_with_workers_leaves_previous_dataset_intact(tmp_path):
    root = small_tree(tmp_path / "pclt", patients=12, slices=6)
    raw = tmp_path / "raw"
    target = raw / "Dataset501_PCLT20K"
    argv = ["pclt20k", str(root), "--raw-dir", str(raw), "--quiet", "-np", "2", "--compression", "9"]
    assert cli.main(argv) == 0
    before = files_of(target)
    script = "import sys; from nnunetv2_cipa.dataset_conversion.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", script, *argv, "--overwrite"], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            staged = list(raw.glob(".Dataset501_PCLT20K.partial-*/imagesTr/*_0001.nii.gz"))
            if len(staged) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the conversion ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and its workers, mid-run
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert files_of(target) == before  # the previous dataset, byte for byte
    (staging,) = raw.glob(".Dataset501_PCLT20K.partial-*")  # hidden from nnU-Net (no DatasetXXX_ name)
    for path in staging.rglob("*.nii.gz"):
        if not path.name.startswith("."):  # files under their final name are whole
            assert read(path).size > 0
    assert cli.main([*argv, "--overwrite"]) == 0
    assert [p.name for p in raw.iterdir()] == [target.name]  # the next run removed the stale staging


def test_compression_level_changes_size_not_data(tmp_path):
    root = small_tree(tmp_path / "pclt", patients=2, slices=3)
    stored, smallest = tmp_path / "a" / "Dataset501_PCLT20K", tmp_path / "b" / "Dataset501_PCLT20K"
    convert(root, stored, compression=0)
    convert(root, smallest, compression=9)
    name = "imagesTr/0002_1_0000.nii.gz"
    assert (stored / name).stat().st_size > 2 * (smallest / name).stat().st_size
    np.testing.assert_array_equal(read(stored / name), read(smallest / name))
    assert (
        json.loads((smallest / "dataset.json").read_text())["cipa_conversion"]["compression"]
        == "gzip level 9 (zlib)"
    )


def test_as_volumes_stacks_each_patient_and_keeps_gapped_patients_as_slices(tmp_path):
    root = small_tree(tmp_path / "pclt", patients=4, slices=5)
    for kind in ("CT", "PET", "mask"):  # patient 0004 loses slice 3: not consecutive
        (root / "0004" / f"0004_3_{kind}.png").unlink()
    (root / "train.txt").write_text(
        "\n".join(n for n in (root / "train.txt").read_text().split() if n != "0004_3")
    )
    target = tmp_path / "Dataset501_PCLT20K"
    summary, log = convert(root, target, 2, as_volumes=True, slice_thickness_mm=2.5)
    volume = sitk.ReadImage(str(target / "imagesTr" / "0002_0000.nii.gz"))
    assert volume.GetSize() == (64, 64, 5) and volume.GetSpacing() == pytest.approx((0.98, 0.98, 2.5))
    png_slice_4 = read_png_hu(root / "0002" / "0002_4_CT.png")
    np.testing.assert_allclose(read(target / "imagesTr" / "0002_0000.nii.gz")[3], png_slice_4, atol=1e-3)
    assert (target / "imagesTs" / "0001_0000.nii.gz").is_file()  # the test patient, one volume
    assert (target / "imagesTr" / "0004_1_0000.nii.gz").is_file()  # gapped patient: slice cases
    assert any(w["where"] == "patient 0004" and "not consecutive" in w["message"] for w in log.warnings)
    assert summary["as_volumes"] == {
        "volume_cases": 3,
        "patients_kept_as_slices": {"0004": "slice numbers are not consecutive or PNG shapes differ"},
    }
    assert summary["parity"]["ours"]["pairs"] == 19 and summary["cases"] == {"train": 6, "test": 1}
    splits = json.loads((target / "splits_final.json").read_text())
    for fold in splits:  # still grouped by patient: the slice cases of 0004 stay together
        groups = [{c.split("_")[0] for c in fold[k]} for k in ("train", "val")]
        assert not groups[0] & groups[1]


def read_png_hu(path: Path) -> np.ndarray:
    from skimage.io import imread

    return (-1200.0 + 1000.0 * imread(path).astype(np.float64) / 255.0).astype(np.float32)


def write_known_item(root: Path, name: str, value: int) -> None:
    """CT and PET PNGs that hold one value (the slice's identity), a mask marking the slice."""
    folder = root / name.split("_")[0]
    folder.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((8, 8), np.uint8)
    mask[: value % 8 + 1, 0] = 255  # the label's size tells which slice it belongs to
    for kind, arr in (
        ("CT", np.full((8, 8), value, np.uint8)),
        ("PET", np.full((8, 8), 2 * value, np.uint8)),
    ):
        imsave(folder / f"{name}_{kind}.png", arr, check_contrast=False)
    imsave(folder / f"{name}_mask.png", mask, check_contrast=False)


def test_context_slices_of_pclt20k_items_follow_slice_numbers_with_edge_replication(tmp_path):
    root = tmp_path / "pclt"
    numbers = (1, 2, 3, 5, 6)  # 4 is missing: runs 1..3 and 5..6
    for n in numbers:
        write_known_item(root, f"0001_{n}", 10 * n)
    write_known_item(root, "0002_1", 100)
    write_known_item(root, "0003_1", 110)
    (root / "train.txt").write_text("\n".join(f"0001_{n}" for n in reversed(numbers)) + "\n0002_1\n")
    (root / "test.txt").write_text("0003_1\n")
    target = tmp_path / "raw" / "Dataset501_PCLT20K"
    summary, _ = convert(root, target, 2, context_slices=1)
    ds = json.loads((target / "dataset.json").read_text())
    assert ds["channel_names"] == {
        "0": "CT-1",
        "1": "CT+0",
        "2": "CT+1",
        "3": "PET-1",
        "4": "PET+0",
        "5": "PET+1",
    }
    assert ds["cipa_context_slices"] == 1 and ds["channel_names"] == channel_names(1)

    def grey(case: str, channel: int) -> float:
        arr = read(target / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
        assert arr.min() == arr.max()
        hu = float(arr.flat[0])
        return round((hu + 1200.0) / 1000.0 * 255.0) if channel < 3 else round(hu * 255.0)

    expected = {  # CT grey values at offsets -1, 0, +1 (the run's end item repeated at its edges)
        "0001_1": (10, 10, 20),
        "0001_2": (10, 20, 30),
        "0001_3": (20, 30, 30),
        "0001_5": (50, 50, 60),
        "0001_6": (50, 60, 60),
        "0002_1": (100, 100, 100),
    }
    for case, cts in expected.items():
        assert tuple(grey(case, c) for c in range(3)) == cts
        assert tuple(grey(case, c) for c in range(3, 6)) == tuple(2 * v for v in cts)
        assert read(target / "labelsTr" / f"{case}.nii.gz").sum() == cts[1] % 8 + 1  # the centre's label
    assert not (target / "imagesTr" / "0001_1_0006.nii.gz").exists()
    assert summary["context_slices"]["items_with_missing_neighbour"] == 6  # all but 0001_2 touch an edge
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["cases"]["0001_3"]["context_items"] == ["0001_2", "0001_3", "0001_3"]


def test_context_zero_is_todays_output(tmp_path):
    root = small_tree(tmp_path / "pclt", patients=2, slices=3)
    plain, zero = tmp_path / "a" / "Dataset501_PCLT20K", tmp_path / "b" / "Dataset501_PCLT20K"
    convert(root, plain)
    convert(root, zero, context_slices=0)
    a, b = files_of(plain), files_of(zero)
    a.pop(MANIFEST), b.pop(MANIFEST)
    assert a == b
    ds = json.loads((zero / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "zscore", "1": "zscore"} and "cipa_context_slices" not in ds


def test_shifted_stack_on_a_volume_with_known_slices():
    volume = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)  # slice z holds z
    stacks = shifted_stack(volume, 2)
    assert [s[:, 0, 0].tolist() for s in stacks] == [
        [0, 0, 0, 1, 2],
        [0, 0, 1, 2, 3],
        [0, 1, 2, 3, 4],
        [1, 2, 3, 4, 4],
        [2, 3, 4, 4, 4],
    ]
    inner = shifted_stack(volume, 1, lo=1, hi=3)  # neighbours outside lo..hi are real, not replicas
    assert [s[:, 0, 0].tolist() for s in inner] == [[0, 1], [1, 2], [2, 3]]


def test_convert_case_with_context_slices_on_known_slices(tmp_path, capsys):
    values = np.arange(4, dtype=np.float32)[:, None, None] * 100.0 - 1100.0  # slice z: -1100 + 100 z HU
    ct = sitk.GetImageFromArray(np.broadcast_to(values, (4, 6, 6)).copy())
    ct.SetSpacing((1.0, 1.0, 3.0))
    pet = sitk.GetImageFromArray(np.broadcast_to(values + 1100.0, (4, 6, 6)).copy())  # SUV 0, 100, 200, 300
    pet.SetSpacing((1.0, 1.0, 3.0))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(pet, str(tmp_path / "pet.nii.gz"))
    out = tmp_path / "imagesTs"
    argv = [
        "case",
        "--ct",
        str(tmp_path / "ct.nii.gz"),
        "--pet",
        str(tmp_path / "pet.nii.gz"),
        "--out",
        str(out),
    ]
    argv += ["--pet-suv-factor", "0.01", "--case-id", "c", "--quiet", "-np", "2"]
    assert cli.main([*argv, "--context-slices", "1"]) == 0
    channels = [read(out / f"c_{i:04d}.nii.gz")[:, 0, 0].tolist() for i in range(6)]
    assert channels[:3] == [
        [-1100, -1100, -1000, -900],
        [-1100, -1000, -900, -800],
        [-1000, -900, -800, -800],
    ]
    np.testing.assert_allclose(channels[3:], [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 3]], atol=1e-5)
    assert json.loads((out / "c.conversion.json").read_text())["context_slices"] == 1
    assert cli.main([*argv, "--overwrite"]) == 0  # back to two channels: the extra ones are removed
    assert sorted(p.name for p in out.glob("c_*.nii.gz")) == ["c_0000.nii.gz", "c_0001.nii.gz"]


def test_cli_options_of_every_subcommand(tmp_path, nnunet_dirs, capsys):
    parser = cli.build_parser("convert")
    for sub in ("pclt20k x", "sts x", "case --ct a --pet b"):
        args = parser.parse_args([*sub.split(), "-np", "3", "--compression", "4", "--context-slices", "2"])
        assert (args.num_processes, args.compression, args.context_slices) == (3, 4, 2)
    root = small_tree(tmp_path / "pclt", patients=2, slices=2)
    assert cli.main(["pclt20k", str(root), "--context-slices", "1", "--ct-norm", "noNorm", "--quiet"]) == 2
    assert "cannot be combined" in capsys.readouterr().err
    assert cli.main(["pclt20k", str(root), "--as-volumes", "--slice-thickness", "0.5", "--quiet"]) == 2
    assert "must exceed the in-plane spacing" in capsys.readouterr().err
    assert cli.main(["pclt20k", str(root), "-np", "0", "--quiet"]) == 2
