"""Converters from PCLT20K, TCIA STS DICOM and new PET/CT cases to nnU-Net raw format (no torch)."""
