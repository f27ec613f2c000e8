"""The training log states the scan backend, the parameter count and the CIPA settings."""

from __future__ import annotations

from nnunetv2_cipa.architectures import build_cipa
from nnunetv2_cipa.architectures.counting import count_parameters
from nnunetv2_cipa.trainers.cipa_trainer import network_log_line


def test_log_line_names_backend_count_and_settings(monkeypatch):
    monkeypatch.delenv("NNUNETV2_CIPA_SCAN_BACKEND", raising=False)
    net = build_cipa("small", patch_size=(64, 64))
    line = network_log_line(net)
    assert "scan backend auto (torch on CPU" in line
    assert f"; {count_parameters(net)} parameters" in line
    assert "'dcim_window': 2" in line and "'dims': [16, 32, 64, 128]" in line


def test_log_line_shows_a_forced_backend():
    net = build_cipa("small", patch_size=(64, 64), scan_backend="reference")
    assert "scan backend reference;" in network_log_line(net)
