"""SS2D / SS1D building blocks: cross-scan geometry, shapes, fp32 scans under autocast."""

from __future__ import annotations

import torch

import nnunetv2_cipa.blocks.scan_call as scan_call
from nnunetv2_cipa.blocks.ss1d import SS1D
from nnunetv2_cipa.blocks.ss2d import SS2D, cross_merge, cross_scan


def test_cross_scan_orders_non_square():
    x = torch.arange(2 * 3, dtype=torch.float32).view(1, 1, 2, 3)  # [[0,1,2],[3,4,5]]
    xs = cross_scan(x)[0, :, 0]
    assert xs[0].tolist() == [0, 1, 2, 3, 4, 5]  # row-major
    assert xs[1].tolist() == [0, 3, 1, 4, 2, 5]  # column-major
    assert xs[2].tolist() == [5, 4, 3, 2, 1, 0]
    assert xs[3].tolist() == [5, 2, 4, 1, 3, 0]


def test_cross_merge_inverts_each_direction():
    x = torch.randn(2, 3, 4, 6)
    merged = cross_merge(cross_scan(x), 4, 6)
    torch.testing.assert_close(merged, 4 * x.flatten(2))


def test_ss2d_shape_and_parameter_count():
    block = SS2D(96, d_state=16)
    assert sum(p.numel() for p in block.parameters()) == 105_216  # official SS2D at C = 96
    y = SS2D(16, d_state=4)(torch.randn(2, 4, 6, 16))
    assert y.shape == (2, 4, 6, 16)


def test_ss1d_parameter_count_and_shape():
    assert sum(p.numel() for p in SS1D(96, d_state=16).parameters()) == 67_584  # official SS1D
    assert SS1D(16, d_state=4)(torch.randn(2, 10, 16)).shape == (2, 10, 16)


def test_scan_runs_in_fp32_under_autocast(monkeypatch):
    seen = []
    real = scan_call.selective_scan

    def spy(u, delta, A, B, C, D=None, delta_bias=None, **kw):
        seen.append((u.dtype, delta.dtype, B.dtype, torch.is_autocast_enabled("cpu")))
        return real(u, delta, A, B, C, D, delta_bias, **kw)

    monkeypatch.setattr(scan_call, "selective_scan", spy)
    block = SS2D(16, d_state=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(torch.randn(1, 4, 4, 16))
    assert seen == [(torch.float32, torch.float32, torch.float32, False)]
    assert y.dtype == torch.bfloat16  # out_proj runs under autocast again
