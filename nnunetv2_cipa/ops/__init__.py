"""nnunetv2_cipa.ops."""
