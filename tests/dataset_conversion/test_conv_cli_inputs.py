"""The convert CLI names what is wrong with its inputs, derives case ids as nnU-Net expects them, and
prints the same warning count as it prints warnings and lists them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2_cipa.dataset_conversion import cli
from nnunetv2_cipa.dataset_conversion.new_case import case_id_from_path

sys.path.insert(0, str(Path(__file__).parent))
from test_conv_pclt20k import make_tree  # noqa: E402


def test_case_id_drops_the_nnunet_channel_suffix():
    assert case_id_from_path(Path("/data/SYN_012_0000.nii.gz")) == "SYN_012"
    assert case_id_from_path(Path("/data/patient7.mha")) == "patient7"
    assert case_id_from_path(Path("/dicom/STS_001/")) == "STS_001"


def test_convert_case_default_id_from_a_channel_file(tmp_path, capsys):
    image = sitk.GetImageFromArray(np.full((3, 8, 8), -600, np.float32))
    ct, pet = tmp_path / "SYN_012_0000.nii.gz", tmp_path / "SYN_012_0001.nii.gz"
    sitk.WriteImage(image, str(ct))
    sitk.WriteImage(image * 0 + 1, str(pet))
    out = tmp_path / "out"
    argv = ["case", "--ct", str(ct), "--pet", str(pet), "--out", str(out), "--pet-suv-factor", "1", "--quiet"]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "SYN_012.conversion.json", "SYN_012_0000.nii.gz", "SYN_012_0001.nii.gz"
    ]


def test_inputs_that_do_not_exist_or_are_files_are_named(tmp_path, capsys):
    argv = ["case", "--ct", str(tmp_path / "nope"), "--pet", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    expected = f"nnunetv2_cipa convert: error: {tmp_path / 'nope'}: --ct: does not exist"
    assert capsys.readouterr().err.strip() == expected
    a_file = tmp_path / "PCLT20K.zip"
    a_file.write_bytes(b"PK")
    assert cli.main(["pclt20k", str(a_file), "--raw-dir", str(tmp_path / "raw"), "--quiet"]) == 2
    assert "is a file; expected the PCLT20K root folder" in capsys.readouterr().err


def test_summary_counts_every_warning_printed_and_listed(tmp_path, capsys):
    root = make_tree(tmp_path / "PCLT20K", train=("0001_1", "0001_2"), test=("0004_1",))
    raw = tmp_path / "raw"
    assert cli.main(["pclt20k", str(root), "--raw-dir", str(raw), "--dataset-id", "613"]) == 0
    captured = capsys.readouterr()
    printed = captured.err.count("WARNING ")
    manifest = json.loads(next(raw.glob("Dataset613_*/conversion_manifest.json")).read_text())
    summary_count = int(re.search(r"warnings: (\d+)", captured.out).group(1))
    assert any("fewer than two training patients" in w["message"] for w in manifest["warnings"])
    assert summary_count == printed == len(manifest["warnings"]) == manifest["summary"]["warnings"]
