"""The released CIPA checkpoint: the in-repo key list vs our modules, safe loading, every refusal."""

from __future__ import annotations

import argparse
import datetime
import math
import pickle
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_cipa.architectures import build_cipa
from nnunetv2_cipa.architectures.official import (
    AUX_HEAD_PREFIX,
    PATCH_EMBED_KEY,
    OfficialCheckpointError,
    map_official_state_dict,
    official_tensors,
    official_to_ours,
    read_official_checkpoint,
)

sys.path.insert(0, str(Path(__file__).parent))
from official_fixture import random_official_state_dict, save_official_file  # noqa: E402

PAPER_PARAMETERS = 54_572_198  # the official model's parameter count (buffers excluded)


@pytest.fixture(scope="module")
def paper_network():
    return build_cipa("paper", num_classes=1)


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    return random_official_state_dict(seed=3)


def test_official_key_list_and_our_module_names_stay_mapped_one_to_one(paper_network):
    ours = paper_network.state_dict()
    listed = official_tensors()
    assert len(listed) == 848 and len({t.name for t in listed}) == 848
    parameters = [
        t for t in listed if not t.name.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert sum(math.prod(t.shape) for t in parameters) == PAPER_PARAMETERS
    targets = [official_to_ours(t.name) for t in listed]
    assert len(set(targets)) == 848, "two official tensors land on the same module"
    absent = sorted(set(targets) - set(ours))
    assert not absent, f"official tensors map to names our network does not have: {absent[:5]}"
    for tensor, target in zip(listed, targets, strict=True):
        want = tuple(ours[target].shape)
        if target == PATCH_EMBED_KEY:
            assert tensor.shape == (96, 3, 4, 4) and want == (96, 1, 4, 4)
        else:
            assert tensor.shape == want, f"{tensor.name} {tensor.shape} -> {target} {want}"
        assert ours[target].dtype == tensor.dtype
    assert sorted(set(ours) - set(targets)) == sorted(k for k in ours if k.startswith(AUX_HEAD_PREFIX))


def test_patch_embedding_kernel_summed_over_input_channels_is_exact_for_repeated_grey_input():
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(96, 3, 4, 4, generator=generator), torch.randn(96, generator=generator)
    grey = torch.randn(2, 1, 64, 64, generator=generator)
    official = F.conv2d(grey.repeat(1, 3, 1, 1), weight, bias, stride=4)
    folded = F.conv2d(grey, weight.sum(dim=1, keepdim=True), bias, stride=4)
    torch.testing.assert_close(folded, official, rtol=1e-5, atol=1e-5)


def test_mapping_moves_every_value_and_fills_only_the_deep_supervision_heads(paper_network, official_state):
    mapped, report = map_official_state_dict(official_state, paper_network)
    paper_network.load_state_dict(mapped, strict=True)
    assert len(report.rows) == 848
    assert sorted(report.filled) == sorted(k for k in mapped if k.startswith(AUX_HEAD_PREFIX))
    assert all(not mapped[k].any() for k in report.filled)
    for name, value in official_state.items():
        ours = mapped[official_to_ours(name)]
        expected = value.sum(dim=1, keepdim=True) if official_to_ours(name) == PATCH_EMBED_KEY else value
        assert torch.equal(ours, expected), name
    assert any("summed over its input channels" in n for n in report.notes)


@pytest.fixture(scope="module")
def official_files(tmp_path_factory, official_state):
    folder = tmp_path_factory.mktemp("official")
    plain = folder / "CIPA.pth"
    torch.save({"model": official_state}, plain)
    return {"plain": plain, "train_py": save_official_file(folder / "best_model.pth", seed=3, with_args=True)}


def test_reads_the_release_and_a_train_py_checkpoint_with_its_args_namespace(official_files, official_state):
    plain = read_official_checkpoint(official_files["plain"])
    assert plain.other_entries == [] and plain.training_args == {} and len(plain.sha256) == 64
    assert all(torch.equal(plain.state_dict[k], v) for k, v in official_state.items())
    full = read_official_checkpoint(official_files["train_py"])
    assert full.other_entries == ["args", "epoch", "optimizer", "scaler"]
    assert full.training_args["lr"] == 6e-5 and full.training_args["epochs"] == 50


def _save(path: Path, content) -> Path:
    torch.save(content, path)
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(OfficialCheckpointError) as caught:
        read_official_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_refuses_other_keys(tmp_path, official_state):
    extra = dict(official_state, **{"decode_head.extra.weight": torch.zeros(3)})
    assert "1 keys the release does not have (decode_head.extra.weight)" in _refusal(
        _save(tmp_path / "extra.pth", {"model": extra})
    )
    fewer = {k: v for k, v in official_state.items() if "cross_mamba.3." not in k}
    assert "of its keys missing (backbone.cross_mamba.3." in _refusal(
        _save(tmp_path / "fewer.pth", {"model": fewer})
    )
    ddp = {f"module.{k}": v for k, v in list(official_state.items())[:5]}
    assert "DDP 'module.' prefix" in _refusal(_save(tmp_path / "ddp.pth", {"model": ddp}))


def test_refuses_other_shapes_and_dtypes(tmp_path, official_state):
    name = "decode_head.output.weight"
    wider = dict(official_state, **{name: torch.zeros(2, *official_state[name].shape[1:])})
    message = _refusal(_save(tmp_path / "two_classes.pth", {"model": wider}))
    assert f"1 tensors have other shapes: {name} (2, 96, 1, 1) (release: (1, 96, 1, 1))" in message
    double = dict(official_state, **{name: official_state[name].double()})
    assert "other dtypes" in _refusal(_save(tmp_path / "double.pth", {"model": double}))


def test_refuses_vmamba_encoder_only_files(tmp_path, official_state):
    imagenet = {
        "patch_embed.0.weight": torch.zeros(96, 3, 4, 4),
        "layers.0.blocks.0.ln_1.weight": torch.ones(96),
        "head.weight": torch.zeros(1000, 768),
    }
    assert "VMamba encoder checkpoint" in _refusal(_save(tmp_path / "vssm_tiny.pth", {"model": imagenet}))
    encoder = {k: v for k, v in official_state.items() if k.startswith("backbone.vssm.")}
    assert "only the VMamba encoder" in _refusal(_save(tmp_path / "encoder.pth", {"model": encoder}))


def test_refuses_corrupt_truncated_and_non_torch_files(tmp_path, official_files):
    data = official_files["plain"].read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in _refusal(truncated)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    assert "corrupt or truncated" in _refusal(garbage)
    png = tmp_path / "image.pth"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert "not a PyTorch checkpoint" in _refusal(png)
    assert "no such file" in _refusal(tmp_path / "missing.pth")
    listed = _save(tmp_path / "list.pth", [torch.zeros(1)])
    assert "not a checkpoint dict" in _refusal(listed)


class _RunsCode:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_refuses_pickled_objects_outside_the_allow_list(tmp_path, capsys):
    unsafe = _save(tmp_path / "unsafe.pth", {"model": {}, "when": datetime.datetime(2025, 1, 1)})
    assert "objects other than tensors and plain values, refused" in _refusal(unsafe)
    code = _save(tmp_path / "code.pth", {"model": {}, "args": argparse.Namespace(x=_RunsCode())})
    assert "refused" in _refusal(code)
    raw = tmp_path / "raw_pickle.pth"
    raw.write_bytes(pickle.dumps({"model": {}, "payload": _RunsCode()}, protocol=2))
    _refusal(raw)
    assert "pickled code ran" not in capsys.readouterr().out


def test_refuses_non_finite_values(tmp_path, official_state):
    name = "backbone.vssm.layers.2.blocks.4.op.in_proj.weight"
    broken = dict(official_state, **{name: official_state[name].clone()})
    broken[name][0, 0] = float("nan")
    assert f"non-finite values in {name}" in _refusal(_save(tmp_path / "nan.pth", {"model": broken}))
