"""nnunetv2_cipa.architectures."""
