"""The synthetic PCLT20K release: layout, split lists and patients made of hard links."""

from __future__ import annotations

import numpy as np
from skimage.io import imread

from nnunetv2_cipa.synthetic.pclt20k_tree import TreeSpec, write_pclt20k_tree


def test_layout_and_split_lists(tmp_path):
    names = write_pclt20k_tree(tmp_path, TreeSpec(patients=3, slices=4, size=32, test_patients=1))
    assert len(names) == 12
    test = (tmp_path / "test.txt").read_text().split()
    train = (tmp_path / "train.txt").read_text().split()
    assert test == [f"0001_{z}" for z in range(1, 5)]
    assert train[0] == "0002_1" and len(train) == 8
    for name in names:
        patient = name.split("_")[0]
        for kind in ("CT", "PET", "mask"):
            arr = imread(tmp_path / patient / f"{name}_{kind}.png")
            assert arr.dtype == np.uint8 and arr.shape == (32, 32)


def test_patients_beyond_the_distinct_ones_are_links_to_them(tmp_path):
    spec = TreeSpec(patients=5, slices=3, size=32, test_patients=1, distinct_patients=2)
    names = write_pclt20k_tree(tmp_path, spec)
    assert len(names) == 15
    drawn = tmp_path / "0002" / "0002_3_PET.png"
    linked = tmp_path / "0004" / "0004_3_PET.png"  # patient index 3 -> 3 % 2 = 1, i.e. 0002
    assert linked.stat().st_ino == drawn.stat().st_ino
    first = tmp_path / "0001" / "0001_1_CT.png"
    assert (tmp_path / "0005" / "0005_1_CT.png").stat().st_ino == first.stat().st_ino
    # the two drawn patients differ
    assert not np.array_equal(
        imread(tmp_path / "0001" / "0001_2_CT.png"), imread(tmp_path / "0002" / "0002_2_CT.png")
    )
