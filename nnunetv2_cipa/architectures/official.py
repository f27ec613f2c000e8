"""Read the released CIPA checkpoint (``CIPA.pth``) safely and map it 1:1 onto our paper network.

Facts this module relies on (public source: github mj129/CIPA, commit 5c90d86):

* ``pred.py`` loads the release as ``torch.load('save_model/CIPA.pth')['model']`` into the network that
  ``models/builder.py`` builds with ``train.py``'s configuration (backbone ``sigma_tiny``, decoder
  ``MambaDecoder``, 512x512, ``num_classes = 1``). Its 848 tensors (names ``backbone.*`` and
  ``decode_head.*``, shapes, dtypes) are listed in ``official_cipa_keys.txt`` beside this module.
* A checkpoint written by ``train.py`` holds ``{"model", "optimizer", "epoch", "args"}`` (plus
  ``"scaler"`` with AMP), where ``args`` is an ``argparse.Namespace``. ``torch.load(weights_only=True)``
  refuses that class unless allow-listed, so exactly ``argparse.Namespace`` is allow-listed; nothing
  else from the file can run code or build objects.
* The official input is each grey image repeated into 3 channels (``pred.py``: ``.repeat(1, 3, 1, 1)``),
  so the patch-embedding kernel (96, 3, 4, 4) summed over its input channels is exact for our default
  of one channel per modality.
* The official network has no deep-supervision heads; ours has ``decoder.aux_heads.*`` (used only in
  training). They are filled with zeros: inference never reads them and the state_dict loads strictly.

Renaming (official -> ours; shapes identical, nothing transposed). The rules are regular expressions
applied in order, so they follow our modules wherever they are renamed; the tests check that every
listed official tensor lands on exactly one of our tensors of the same shape.

* encoder: ``backbone.vssm.patch_embed.{0,2}`` -> ``encoder.patch_embed.{proj,norm}``,
  ``backbone.vssm.layers.i`` -> ``encoder.layers.i``, ``backbone.vssm.outnorm{i}`` -> ``encoder.out_norms.i``;
* CRM: ``backbone.cross_mamba.i.channel_weights.mlp.{0,1,3,4,5}`` -> ``crm.i.{token_norm, token_proj,
  mixer, head_norm, head}``;
* DCIM: ``backbone.region_patch.i.{inner,outer}_convs.n`` -> ``dcim.i.stem.{inner,outer}_convs.{n//3}.{n%3}``
  (BatchNorm running statistics included), ``backbone.channel_attn_mamba.i.{outer_norm1, outer_attn,
  inner_norm1, inner_attn}`` -> ``dcim.i.mixer.{region_norm, region_mamba, local_norm, local_mamba}``;
* decoder: ``decode_head.layers_up.0`` -> ``decoder.expand``, ``decode_head.layers_up.{1,2,3}`` ->
  ``decoder.levels.{0,1,2}``, ``decode_head.up`` -> ``decoder.final_up``, ``decode_head.{norm_up,output}``
  -> ``decoder.{norm_up,output}``;
* the scan parameters (``x_proj_weight``, ``dt_projs_weight``, ``dt_projs_bias``, ``A_logs``, ``Ds``) sit
  one level deeper in ours, under the block's ``ssm.`` submodule, wherever they occur.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .checkpoint_digest import file_sha256

KEY_LIST_FILE = Path(__file__).with_name("official_cipa_keys.txt")
PATCH_EMBED_KEY = "encoder.patch_embed.proj.weight"
AUX_HEAD_PREFIX = "decoder.aux_heads."
SAFE_GLOBALS = (argparse.Namespace,)  # train.py's checkpoint['args']; nothing else is allow-listed
_SCAN_PARAMS = ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")
_CRM_PARTS = {"0": "token_norm", "1": "token_proj", "3": "mixer", "4": "head_norm", "5": "head"}
_DCIM_MIXER = {
    "outer_norm1": "region_norm",
    "outer_attn": "region_mamba",
    "inner_norm1": "local_norm",
    "inner_attn": "local_mamba",
}
_Replacement = str | Callable[[re.Match[str]], str]
RENAME_RULES: list[tuple[re.Pattern[str], _Replacement]] = [
    (re.compile(r"^backbone\.vssm\.patch_embed\.0\."), "encoder.patch_embed.proj."),
    (re.compile(r"^backbone\.vssm\.patch_embed\.2\."), "encoder.patch_embed.norm."),
    (re.compile(r"^backbone\.vssm\.layers\."), "encoder.layers."),
    (re.compile(r"^backbone\.vssm\.outnorm(\d+)\."), r"encoder.out_norms.\1."),
    (
        re.compile(r"^backbone\.cross_mamba\.(\d+)\.channel_weights\.mlp\.([01345])\."),
        lambda m: f"crm.{m[1]}.{_CRM_PARTS[m[2]]}.",
    ),
    (
        re.compile(r"^backbone\.region_patch\.(\d+)\.(inner|outer)_convs\.(\d+)\."),
        lambda m: f"dcim.{m[1]}.stem.{m[2]}_convs.{int(m[3]) // 3}.{int(m[3]) % 3}.",
    ),
    (
        re.compile(
            r"^backbone\.channel_attn_mamba\.(\d+)\.(outer_norm1|outer_attn|inner_norm1|inner_attn)\."
        ),
        lambda m: f"dcim.{m[1]}.mixer.{_DCIM_MIXER[m[2]]}.",
    ),
    (re.compile(r"^decode_head\.layers_up\.0\."), "decoder.expand."),
    (re.compile(r"^decode_head\.layers_up\.([123])\."), lambda m: f"decoder.levels.{int(m[1]) - 1}."),
    (re.compile(r"^decode_head\.up\."), "decoder.final_up."),
    (re.compile(r"^decode_head\.(norm_up|output)\."), r"decoder.\1."),
    (re.compile(r"\.(" + "|".join(_SCAN_PARAMS) + r")$"), r".ssm.\1"),
]


class OfficialCheckpointError(ValueError):
    """The file is not the released CIPA checkpoint (or is damaged); the message is one line."""


@dataclass(frozen=True)
class OfficialTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@lru_cache(maxsize=1)
def official_tensors() -> tuple[OfficialTensor, ...]:
    """The 848 tensors of the released model, in state_dict order (from ``official_cipa_keys.txt``)."""
    tensors = []
    for line in KEY_LIST_FILE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, dtype = line.split()
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        tensors.append(OfficialTensor(name, dims, getattr(torch, dtype)))
    return tuple(tensors)


def official_to_ours(name: str) -> str:
    """Our module path for one official tensor name (the rules of the module docstring)."""
    for pattern, replacement in RENAME_RULES:
        name = pattern.sub(replacement, name)
    return name


# -------------------------------------------------------------------------------------------- reading
def _describe(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}{f' (+{len(keys) - limit} more)' if len(keys) > limit else ''}"


def _open_checkpoint(path: Path) -> object:
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: no such file")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise OfficialCheckpointError(
            f"{path}: not a PyTorch checkpoint (neither a torch zip archive nor a pickle)"
        )
    if head[:2] == b"PK" and not zipfile.is_zipfile(path):
        raise OfficialCheckpointError(
            f"{path}: corrupt or truncated PyTorch file (its zip directory is missing)"
        )
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged or unsafe files
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in first:
            found = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
            detail = f"pickled global {found[1]} is not allow-listed" if found else first[:120]
            raise OfficialCheckpointError(
                f"{path}: holds objects other than tensors and plain values, refused ({detail})"
            ) from None
        raise OfficialCheckpointError(f"{path}: corrupt or unreadable PyTorch file ({first[:160]})") from None


def _state_dict_of(path: Path, checkpoint: object) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The ``'model'`` state_dict (or a bare state_dict) and the names of the other top-level entries."""
    if not isinstance(checkpoint, Mapping):
        raise OfficialCheckpointError(f"{path}: holds a {type(checkpoint).__name__}, not a checkpoint dict")
    if isinstance(checkpoint.get("model"), Mapping):
        state, others = checkpoint["model"], sorted(str(k) for k in checkpoint if k != "model")
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state, others = checkpoint, []
    else:
        raise OfficialCheckpointError(
            f"{path}: no 'model' state_dict (top-level entries: {_describe(sorted(map(str, checkpoint)), 6)})"
        )
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise OfficialCheckpointError(
            f"{path}: state_dict entries that are not tensors: {_describe(not_tensors)}"
        )
    return {str(k): v for k, v in state.items()}, others


def _refuse_other_models(path: Path, keys: list[str]) -> None:
    if keys and all(k.startswith("module.") for k in keys):
        raise OfficialCheckpointError(
            f"{path}: keys carry a DDP 'module.' prefix ({keys[0]}); "
            "the release has none (backbone.*, decode_head.*)"
        )
    official_prefix = [k for k in keys if k.startswith(("backbone.", "decode_head."))]
    if not official_prefix and any(re.match(r"^(patch_embed|layers\.\d+\.blocks)\.", k) for k in keys):
        raise OfficialCheckpointError(
            f"{path}: a VMamba encoder checkpoint (keys like {keys[0]}), not the CIPA model; an ImageNet "
            "encoder initialises training (nnUNetTrainerCIPA_pretrained, NNUNETV2_CIPA_PRETRAINED)"
        )
    if official_prefix and all(k.startswith("backbone.vssm.") for k in keys):
        raise OfficialCheckpointError(
            f"{path}: only the VMamba encoder (backbone.vssm.*) of CIPA; "
            "the fusion modules and decoder are missing"
        )


def _check_against_release(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    expected = {t.name: t for t in official_tensors()}
    missing = [n for n in expected if n not in state]
    unexpected = [n for n in state if n not in expected]
    if missing or unexpected:
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} keys the release does not have ({_describe(unexpected)})")
        if missing:
            parts.append(f"{len(missing)} of its keys missing ({_describe(missing)})")
        raise OfficialCheckpointError(f"{path}: not the released CIPA model: {'; '.join(parts)}")
    wrong = [
        f"{n} {tuple(state[n].shape)} (release: {expected[n].shape})"
        for n in expected
        if tuple(state[n].shape) != expected[n].shape
    ]
    if wrong:
        raise OfficialCheckpointError(
            f"{path}: {len(wrong)} tensors have other shapes: {_describe(wrong, 2)}"
        )
    wrong_type = [f"{n} {state[n].dtype}" for n in expected if state[n].dtype != expected[n].dtype]
    if wrong_type:
        raise OfficialCheckpointError(
            f"{path}: {len(wrong_type)} tensors have other dtypes than the release: "
            f"{_describe(wrong_type, 2)}"
        )
    not_finite = [n for n in expected if state[n].is_floating_point() and not torch.isfinite(state[n]).all()]
    if not_finite:
        raise OfficialCheckpointError(f"{path}: damaged, non-finite values in {_describe(not_finite)}")


@dataclass
class OfficialCheckpoint:
    """The validated release: its state_dict, the ignored top-level entries and the file's digest."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    other_entries: list[str]
    sha256: str
    training_args: dict[str, object] = field(default_factory=dict)


def read_official_checkpoint(path: str | Path) -> OfficialCheckpoint:
    """Load ``CIPA.pth`` with ``weights_only=True`` and refuse anything but the released model."""
    path = Path(path)
    checkpoint = _open_checkpoint(path)
    state, others = _state_dict_of(path, checkpoint)
    _refuse_other_models(path, list(state))
    _check_against_release(path, state)
    args = checkpoint.get("args") if isinstance(checkpoint, Mapping) else None
    training_args = {}
    if isinstance(args, argparse.Namespace):  # recorded in the report (train.py's lr, epochs, ...)
        training_args = {k: v for k, v in vars(args).items() if isinstance(v, str | int | float | bool)}
    return OfficialCheckpoint(path, state, others, file_sha256(path), training_args)


# -------------------------------------------------------------------------------------------- mapping
@dataclass
class MappingReport:
    """What the mapping did, tensor by tensor (official name -> our name, shapes, notes)."""

    rows: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def values(self) -> int:
        """Numbers copied from the release (parameters and BatchNorm statistics)."""
        return sum(int(torch.Size(shape).numel()) for _, _, shape, _ in self.rows)


def map_official_state_dict(
    official: Mapping[str, torch.Tensor], network: nn.Module
) -> tuple[dict[str, torch.Tensor], MappingReport]:
    """A state_dict for ``network`` (our paper network) holding every official tensor exactly once.

    Raises ``RuntimeError`` when the rules and our modules disagree (a name mapped twice or not at
    all, another shape): that is a bug of this package, not of the file.
    """
    target = network.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    report = MappingReport()
    for name, value in official.items():
        ours = official_to_ours(name)
        if ours not in target:
            raise RuntimeError(f"official tensor {name} maps to {ours}, which our network does not have")
        if ours in mapped:
            raise RuntimeError(f"official tensor {name} maps to {ours}, already filled by another tensor")
        want = tuple(target[ours].shape)
        if ours == PATCH_EMBED_KEY and value.shape[1] != want[1] and want[1] == 1:
            value = value.sum(dim=1, keepdim=True)
            report.notes.append(
                f"{name} {tuple(official[name].shape)} summed over its input channels -> {ours} {want} "
                "(exact: the official input repeats each grey image into 3 channels)"
            )
        if tuple(value.shape) != want:
            raise RuntimeError(f"official tensor {name} {tuple(value.shape)} does not fit {ours} {want}")
        mapped[ours] = value.to(target[ours].dtype)
        report.rows.append((name, ours, tuple(official[name].shape), want))
    for ours, value in target.items():
        if ours in mapped:
            continue
        if not ours.startswith(AUX_HEAD_PREFIX):
            raise RuntimeError(f"our tensor {ours} receives no official tensor")
        mapped[ours] = torch.zeros_like(value)
        report.filled.append(ours)
    if report.filled:
        report.notes.append(
            f"{len(report.filled)} deep-supervision head tensors ({AUX_HEAD_PREFIX}*) are not in the "
            "release: filled with zeros (used only in training; inference never reads them)"
        )
    return mapped, report
