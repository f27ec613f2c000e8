"""nnunetv2_cipa.blocks."""
