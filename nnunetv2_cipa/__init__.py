"""nnunetv2_cipa: CIPA (Mei et al., CVPR 2025) for PET/CT segmentation as an nnU-Net v2 plugin.

Importing this package is cheap and never imports torch: subpackages load what they need.
Layers point one way: ``ops`` -> ``blocks`` -> ``architectures`` -> ``trainers``;
``dataset_conversion`` depends on none of them and not on torch.
"""

__version__ = "0.1.0"
