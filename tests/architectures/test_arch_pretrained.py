"""Loading an ImageNet VMamba v0 checkpoint, built here with the official key names and shapes."""

from __future__ import annotations

import math

import pytest
import torch

from nnunetv2_cipa.architectures import build_cipa
from nnunetv2_cipa.architectures.pretrained import load_vmamba_encoder

DIMS, DEPTHS, N = (16, 32, 64, 128), (1, 1, 1, 1), 4  # the "small" preset's encoder geometry


def official_v0_state_dict() -> dict[str, torch.Tensor]:
    """Keys and shapes as in VMamba v0 / vssmtiny_dp01_ckpt_epoch_292.pth (independent of our modules)."""
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g)

    sd = {"patch_embed.proj.weight": t(DIMS[0], 3, 4, 4), "patch_embed.proj.bias": t(DIMS[0]),
          "patch_embed.norm.weight": t(DIMS[0]), "patch_embed.norm.bias": t(DIMS[0])}
    for i, (c, depth) in enumerate(zip(DIMS, DEPTHS, strict=True)):
        d_in, r = 2 * c, math.ceil(c / 16)
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}"
            sd |= {f"{b}.ln_1.weight": t(c), f"{b}.ln_1.bias": t(c)}
            a = f"{b}.self_attention"
            sd |= {
                f"{a}.in_proj.weight": t(2 * d_in, c), f"{a}.conv2d.weight": t(d_in, 1, 3, 3),
                f"{a}.conv2d.bias": t(d_in), f"{a}.x_proj_weight": t(4, r + 2 * N, d_in),
                f"{a}.dt_projs_weight": t(4, d_in, r), f"{a}.dt_projs_bias": t(4, d_in),
                f"{a}.A_logs": t(4 * d_in, N), f"{a}.Ds": t(4 * d_in),
                f"{a}.out_norm.weight": t(d_in), f"{a}.out_norm.bias": t(d_in),
                f"{a}.out_proj.weight": t(c, d_in),
            }
        if i < len(DIMS) - 1:
            down = f"layers.{i}.downsample"
            sd |= {f"{down}.reduction.weight": t(2 * c, 4 * c),
                   f"{down}.norm.weight": t(4 * c), f"{down}.norm.bias": t(4 * c)}
    sd |= {"norm.weight": t(DIMS[-1]), "norm.bias": t(DIMS[-1]), "head.weight": t(1000, DIMS[-1]),
           "head.bias": t(1000)}
    return sd


@pytest.mark.parametrize("channels", [1, 3])
def test_load_official_names(tmp_path, channels):
    source = official_v0_state_dict()
    path = tmp_path / "vssm_v0.pth"
    torch.save({"model": source, "epoch": 292}, path)
    net = build_cipa("small", patch_size=(64, 64), channels_per_modality=channels)
    report = load_vmamba_encoder(net, path)
    assert report.unexpected == [] and report.mismatched == []
    assert sorted(report.ignored) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert report.missing == sorted(f"out_norms.{i}.{p}" for i in range(4) for p in ("bias", "weight"))
    enc = net.encoder
    for ours, theirs in [
        (enc.layers[2].blocks[0].op.ssm.A_logs, "layers.2.blocks.0.self_attention.A_logs"),
        (enc.layers[1].blocks[0].norm.weight, "layers.1.blocks.0.ln_1.weight"),
        (enc.layers[0].downsample.reduction.weight, "layers.0.downsample.reduction.weight"),
    ]:
        torch.testing.assert_close(ours, source[theirs])
    kernel = source["patch_embed.proj.weight"]
    expected = kernel.sum(1, keepdim=True) if channels == 1 else kernel
    torch.testing.assert_close(enc.patch_embed.proj.weight, expected)
    assert ("summed" in str(report)) == (channels == 1)


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    net = build_cipa("small", patch_size=(64, 64))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_vmamba_encoder(net, tmp_path / "nope.pth")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": {"x": object()}}, unsafe)  # needs full unpickling
    with pytest.raises(ValueError, match="weights-only"):
        load_vmamba_encoder(net, unsafe)
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(3)}}, foreign)
    with pytest.raises(ValueError, match="no tensor"):
        load_vmamba_encoder(net, foreign)
