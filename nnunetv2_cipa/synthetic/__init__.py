"""nnunetv2_cipa.synthetic."""
