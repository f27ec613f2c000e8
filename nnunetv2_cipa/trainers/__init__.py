"""nnunetv2_cipa.trainers."""
