"""CPU behaviour of the CIPA network: switches, deep supervision, sizes, backends, optimisation."""

from __future__ import annotations

import io

import pytest
import torch

from nnunetv2_cipa.architectures import build_cipa
from nnunetv2_cipa.architectures.optim import param_groups


def _small(**kw):
    torch.manual_seed(0)
    return build_cipa("small", patch_size=kw.pop("patch_size", (64, 64)), **kw)


@pytest.mark.parametrize(("crm", "dcim"), [(True, True), (True, False), (False, True), (False, False)])
def test_forward_backward_each_switch(crm, dcim):
    net = _small(crm=crm, dcim=dcim, num_classes=2)
    x = torch.randn(2, 2, 64, 64)
    y = net(x)
    assert y.shape == (2, 2, 64, 64) and torch.isfinite(y).all()
    y.square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None and ".aux_heads." not in n]
    assert no_grad == []  # aux heads get none: deep supervision is off


def test_deep_supervision_outputs_and_scales():
    net = _small(patch_size=(64, 128), deep_supervision=False)
    x = torch.randn(1, 2, 64, 128)
    assert isinstance(net(x), torch.Tensor)
    net.decoder.deep_supervision = True
    outs = net(x)
    scales = net.deep_supervision_scales()
    assert len(outs) == len(scales) == 4 and scales[0] == [1.0, 1.0]
    for out, (sh, sw) in zip(outs, scales, strict=True):
        assert out.shape[-2:] == (round(64 * sh), round(128 * sw))
    keys_ds = set(net.state_dict())
    assert keys_ds == set(_small(patch_size=(64, 128), deep_supervision=False).state_dict())


def test_non_square_patch_and_channel_order():
    net = _small(patch_size=(128, 64), ct_channel=1, pet_channel=0, in_channels=3).eval()
    x = torch.randn(1, 3, 128, 64)
    y = net(x)
    assert y.shape == (1, 1, 128, 64)
    swapped = _small(patch_size=(128, 64), ct_channel=0, pet_channel=1, in_channels=3).eval()
    swapped.load_state_dict(net.state_dict())
    torch.testing.assert_close(swapped(x[:, [1, 0, 2]]), y)


def test_bad_input_size_errors_name_expected_size():
    net = _small(patch_size=(64, 128))
    with pytest.raises(ValueError, match="expects 64x128"):
        net(torch.randn(1, 2, 128, 64))
    with pytest.raises(ValueError, match="multiple of 64"):
        _small(patch_size=(96, 64))
    no_crm = _small(patch_size=(64, 64), crm=False)
    with pytest.raises(ValueError, match="not a multiple of 64"):
        no_crm(torch.randn(1, 2, 64, 80))
    with pytest.raises(ValueError, match=r"expected input \(batch, 2, H, W\)"):
        net(torch.randn(1, 3, 64, 128))


def test_same_outputs_on_torch_and_reference_backends():
    net = _small(patch_size=(64, 64)).eval()
    x = torch.randn(1, 2, 64, 64)
    keys = list(net.state_dict())
    net.set_scan_backend("torch")
    with torch.no_grad():
        y_torch = net(x)
    net.set_scan_backend("reference")
    with torch.no_grad():
        y_ref = net(x)
    assert list(net.state_dict()) == keys  # the backend is not part of the state
    assert (y_torch - y_ref).abs().max() < 1e-3


def test_state_dict_saved_with_one_backend_loads_with_another():
    saved = _small(scan_backend="reference")
    buffer = io.BytesIO()
    torch.save(saved.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    other = build_cipa("small", patch_size=(64, 64), scan_backend="torch")
    other.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    x = torch.randn(1, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(x), saved.eval()(x), atol=1e-4, rtol=1e-4)


def test_every_parameter_trains_with_param_groups():
    # 128x128: the deepest DCIM region grid must be > 1 token, else A has no influence (L = 1)
    net = _small(deep_supervision=True, patch_size=(128, 128))
    groups = param_groups(net, weight_decay=0.01)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(list(net.parameters())) == len({id(p) for p in grouped})
    names = {id(p): n for n, p in net.named_parameters()}
    no_decay = {names[id(p)].rsplit(".", 1)[-1] for p in groups[1]["params"]}
    assert {"A_logs", "Ds", "dt_projs_bias", "bias", "scale1", "scale2"} <= no_decay
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    outs = net(torch.randn(2, 2, 128, 128))
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    optimizer.step()
    unchanged = [n for (n, p), b in zip(net.named_parameters(), before, strict=True) if torch.equal(p, b)]
    assert unchanged == []


@pytest.mark.gpu
def test_cuda_backend_matches_torch_backend():
    net = build_cipa("small", patch_size=(128, 128)).cuda().eval()
    x = torch.randn(2, 2, 128, 128, device="cuda")
    with torch.no_grad():
        net.set_scan_backend("torch")
        y_torch = net(x)
        net.set_scan_backend("cuda")
        y_cuda = net(x)
    assert (y_cuda - y_torch).abs().max() < 1e-3
