"""Build configuration of the selective-scan CUDA extension (torch-free at import time).

Shared by ``setup.py`` (opt-in ahead-of-time build) and the just-in-time loader in
``nnunetv2_cipa.ops``; placeholder until the kernel sources land.
"""

from __future__ import annotations


def cuda_extensions() -> tuple[list, dict]:
    """Extensions and cmdclass for setup(); empty unless NNUNETV2_CIPA_BUILD_CUDA=1."""
    return [], {}
