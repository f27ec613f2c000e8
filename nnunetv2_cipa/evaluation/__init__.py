"""nnunetv2_cipa.evaluation."""
