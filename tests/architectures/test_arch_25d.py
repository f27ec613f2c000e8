"""2.5D CIPA: the slice interaction module, zero-init equivalence with 2D, and the 2D -> 2.5D transfer."""

from __future__ import annotations

import pytest
import torch

from nnunetv2_cipa.architectures import build_cipa
from nnunetv2_cipa.architectures.transfer import (
    TransferError,
    load_cipa_checkpoint,
    transfer_weights,
)
from nnunetv2_cipa.blocks.slice_interaction import SliceInteraction

PATCH = (64, 64)
CT, PET = [0, 1, 2], [3, 4, 5]


def _net_2d(num_classes: int = 1, **kw) -> torch.nn.Module:
    return build_cipa("small", patch_size=PATCH, num_classes=num_classes, **kw)


def _net_25d(sim: bool, num_classes: int = 1) -> torch.nn.Module:
    return build_cipa(
        "small", in_channels=6, num_classes=num_classes, patch_size=PATCH, ct_channel=CT, pet_channel=PET,
        context_slices=1, sim=sim,
    )


def test_slice_interaction_starts_as_identity_on_the_centre_and_learns():
    torch.manual_seed(0)
    block = SliceInteraction(dim=8, slices=3)
    x = torch.randn(2, 3, 6, 6, 8, requires_grad=True)
    out = block(x)
    torch.testing.assert_close(out, x[:, 1], rtol=0, atol=0)
    out.square().sum().backward()
    assert block.proj.weight.grad.abs().sum() > 0  # the zero projection receives a gradient
    assert x.grad[:, 0].abs().sum() == 0  # ... but neighbours do not matter yet
    with torch.no_grad():
        block.proj.weight.normal_(std=0.1)
    assert not torch.allclose(block(x), x[:, 1])
    with pytest.raises(ValueError, match="odd"):
        SliceInteraction(8, slices=2)
    with pytest.raises(ValueError, match=r"expected \(batch, 3"):
        block(torch.randn(2, 5, 6, 6, 8))


@pytest.mark.parametrize("sim", [True, False])
def test_25d_network_from_2d_weights_equals_2d_network_on_centre_slice(sim):
    torch.manual_seed(1)
    net2d = _net_2d().eval()
    net = _net_25d(sim).eval()
    report = transfer_weights(net, net2d.state_dict())
    assert not report.reinitialised
    if sim:
        assert report.kept and all(k.startswith("slice_interaction.") for k in report.kept)
        assert not report.inflated
    else:
        assert report.inflated == ["encoder.patch_embed.proj.weight"] and not report.kept
    x = torch.randn(2, 6, *PATCH)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net2d(x[:, [1, 4]]), rtol=1e-5, atol=1e-5)
        x_other = x.clone()
        x_other[:, [0, 2, 3, 5]] = torch.randn(2, 4, *PATCH)  # neighbours do not matter at init
        torch.testing.assert_close(net(x_other), net(x), rtol=1e-5, atol=1e-5)


def test_sim_parameters_and_channel_checks():
    net2d, sim, stacked = _net_2d(), _net_25d(True), _net_25d(False)
    n2d = sum(p.numel() for p in net2d.parameters())
    n_sim_modules = sum(p.numel() for p in sim.slice_interaction.parameters())
    assert sum(p.numel() for p in sim.parameters()) == n2d + n_sim_modules
    assert sum(p.numel() for p in stacked.parameters()) == n2d + 2 * 16 * 4 * 4  # 2 more input slices
    with pytest.raises(ValueError, match="needs the 3 slice channels"):
        build_cipa("small", in_channels=6, patch_size=PATCH, ct_channel=0, pet_channel=3, context_slices=1)
    with pytest.raises(ValueError, match="context_slices >= 1"):
        build_cipa("small", patch_size=PATCH, sim=True)


def test_transfer_reinitialises_heads_of_another_label_set():
    torch.manual_seed(2)
    source = _net_2d(num_classes=1)
    net = _net_25d(True, num_classes=3)
    heads_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("decoder.output")}
    report = transfer_weights(net, source.state_dict(), source="pretrained.pth")
    assert report.reinitialised == [
        "decoder.output.weight", *[k for k in net.state_dict() if k.startswith("decoder.aux_heads.")]
    ]
    for key, value in heads_before.items():
        torch.testing.assert_close(net.state_dict()[key], value)  # fresh init kept, not the checkpoint's
    encoder_key = "encoder.layers.0.blocks.0.op.in_proj.weight"
    torch.testing.assert_close(net.state_dict()[encoder_key], source.state_dict()[encoder_key])
    lines = report.lines()
    assert lines[0].startswith("transfer from pretrained.pth:")
    assert f"{len(report.reinitialised)} re-initialised" in lines[0]
    assert f"{len(report.kept)} kept" in lines[0]
    assert any("re-initialised (other number of classes)" in line for line in lines)
    assert any("kept at initialisation" in line for line in lines)


def _checkpoint(tmp_path, weights, name="ckpt.pth"):
    path = tmp_path / name
    torch.save({"network_weights": weights, "trainer_name": "x"}, path)
    return path


def test_foreign_checkpoints_are_refused_with_one_line_and_nothing_changes(tmp_path):
    net = _net_25d(True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    wider = build_cipa("small", patch_size=PATCH, dims=32)  # other widths
    other_patch = build_cipa("small", patch_size=(128, 128))  # CRM sized from another patch
    unet = {"encoder.stages.0.0.convs.0.conv.weight": torch.zeros(32, 2, 3, 3)}  # not a CIPA
    sim_into_2d = _net_25d(True).state_dict()
    cases = [
        (_checkpoint(tmp_path, wider.state_dict(), "wider.pth"), "of shape"),
        (_checkpoint(tmp_path, other_patch.state_dict(), "patch.pth"), "crm.0.token_norm.weight"),
        (_checkpoint(tmp_path, unet, "unet.pth"), "is missing there"),
    ]
    for path, expected in cases:
        with pytest.raises(TransferError, match=expected) as err:
            load_cipa_checkpoint(net, path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(TransferError, match="network lacks, first 'slice_interaction"):
        transfer_weights(_net_2d(), sim_into_2d)
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(TransferError, match="not a readable torch checkpoint"):
        load_cipa_checkpoint(net, tmp_path / "broken.pth")
    torch.save({"state_dict": {}}, tmp_path / "plain.pth")
    with pytest.raises(TransferError, match="no 'network_weights'"):
        load_cipa_checkpoint(net, tmp_path / "plain.pth")
    with pytest.raises(TransferError, match="no such checkpoint"):
        load_cipa_checkpoint(net, tmp_path / "absent.pth")
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_checkpoint_file_round_trip_with_wrapper_prefixes(tmp_path):
    torch.manual_seed(3)
    source = _net_2d()
    wrapped = {f"module._orig_mod.{k}": v for k, v in source.state_dict().items()}
    net = _net_25d(True)
    report = load_cipa_checkpoint(net, _checkpoint(tmp_path, wrapped))
    assert len(report.loaded) == len(source.state_dict())


def test_params_command_reports_the_25d_networks(capsys):
    from nnunetv2_cipa.architectures.counting import count_parameters
    from nnunetv2_cipa.commands.params import main

    for sim in (True, False):
        argv = ["--preset", "small", "--patch", "64", "64", "--channels-per-modality", "1"]
        argv += ["--context-slices", "1"]
        assert main(argv + (["--sim"] if sim else [])) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert int(lines[-1]) == count_parameters(_net_25d(sim))
        assert ("2.5D, K=1 (SIM)" if sim else "2.5D, K=1 (stacked slices)") in lines[0]
        assert any("slice interaction modules" in line for line in lines) == sim
