"""nnunetv2_cipa.ops: the selective-scan operator used by every Mamba block.

``selective_scan`` dispatches to a pure-PyTorch backend (always available), our CUDA kernel
(``cuda_backend``, optional) or mamba-ssm's kernel (``mamba_backend``, optional);
``choose_scan_backend`` is the one place the environment override is read.
"""

from nnunetv2_cipa.ops.selective_scan import choose_scan_backend, selective_scan

__all__ = ["choose_scan_backend", "selective_scan"]
