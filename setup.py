"""Package layout and the opt-in CUDA extension.

Two top-level folders of the repository install under the ``nnunetv2_cipa`` namespace:

* ``dataset_conversion/`` -> ``nnunetv2_cipa.dataset_conversion`` (torch-free converters);
* ``csrc/`` -> ``nnunetv2_cipa._csrc`` (the CUDA sources, shipped as package data so that the
  just-in-time build also works from a non-editable install).

A plain ``pip install`` never imports torch and builds nothing: the CUDA extension is compiled
ahead of time only when ``NNUNETV2_CIPA_BUILD_CUDA=1`` is set on a machine whose torch has CUDA
(see ``csrc/build_config.py``); otherwise it is built on first CUDA use.
"""

import sys
from pathlib import Path

from setuptools import find_packages, setup

sys.path.insert(0, str(Path(__file__).resolve().parent))  # build backends do not always put it there

ROOT_PACKAGES = ["nnunetv2_cipa", *(f"nnunetv2_cipa.{p}" for p in find_packages("nnunetv2_cipa"))]
CONVERSION_PACKAGES = [
    "nnunetv2_cipa.dataset_conversion",
    *(f"nnunetv2_cipa.dataset_conversion.{p}" for p in find_packages("dataset_conversion")),
]


def _cuda_ext_modules():
    """Return the CUDA extension list when an AOT build was asked for, else an empty list."""
    from csrc.build_config import cuda_extensions  # torch-free module; imports torch only when asked

    return cuda_extensions()


ext_modules, cmdclass = _cuda_ext_modules()

setup(
    packages=[*ROOT_PACKAGES, *CONVERSION_PACKAGES, "nnunetv2_cipa._csrc"],
    package_dir={
        "nnunetv2_cipa.dataset_conversion": "dataset_conversion",
        "nnunetv2_cipa._csrc": "csrc",
    },
    package_data={"nnunetv2_cipa._csrc": ["selective_scan/*.cu", "selective_scan/*.cuh", "selective_scan/*.h",
                                          "selective_scan/*.cpp"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
