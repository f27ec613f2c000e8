"""The network entry of a plans configuration (key ``cipa``): the config, the channels, the trainer.

Why in the plans: ``nnUNetv2_predict`` builds the network from the results folder's ``plans.json``
alone (it calls the trainer class's ``build_network_architecture`` and never instantiates the trainer;
nnU-Net source ``nnunetv2/inference/predict_from_raw_data.py``, ``initialize_from_trained_model_folder``),
so the trainer writes every architecture setting there, as data.

Format::

    {"config": {<every CIPAConfig field>}, "ct_channel": 0, "pet_channel": 1, "trainer": "nnUNetTrainerCIPA"}

Plans written before the config object had ``{"preset", "overrides", "ct_channel", "pet_channel",
"trainer"}``; they are still read (the preset with its overrides, former setting names translated),
so existing results folders keep predicting. Anything else is refused with a line saying what to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from nnunetv2_cipa.architectures.config import RENAMED, CIPAConfig

CIPA_PLANS_KEY = "cipa"  # configuration entry holding the network settings (travels in plans.json)
_CURRENT_KEYS = {"config", "ct_channel", "pet_channel", "trainer"}
_SOURCE = f"plans entry {CIPA_PLANS_KEY!r}"
_EARLIER_KEYS = {"preset", "overrides", "ct_channel", "pet_channel", "trainer"}


@dataclasses.dataclass(frozen=True)
class NetworkEntry:
    """What a CIPA trainer records about its network in the plans."""

    config: CIPAConfig
    ct_channel: int | tuple[int, ...] = 0
    pet_channel: int | tuple[int, ...] = 1
    trainer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "ct_channel": _channel_json(self.ct_channel),
            "pet_channel": _channel_json(self.pet_channel),
            "trainer": self.trainer,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = _SOURCE) -> NetworkEntry:
        """Read the current format or the earlier preset/overrides one; refuse anything else."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        keys = set(data)
        if "config" in keys and keys <= _CURRENT_KEYS:
            if not isinstance(data["config"], Mapping):
                raise ValueError(f"{source}: 'config' must be a JSON object of CIPA settings")
            config = CIPAConfig.from_dict(data["config"], source=f"{source}, 'config'")
        elif "preset" in keys and keys <= _EARLIER_KEYS:
            overrides = {RENAMED.get(k, k): v for k, v in dict(data.get("overrides") or {}).items()}
            config = CIPAConfig.from_preset(data["preset"], **overrides)
        else:
            raise ValueError(
                f"{source}: unrecognised keys {sorted(keys)} (expected {sorted(_CURRENT_KEYS)}); it was not "
                f"written by nnunetv2_cipa's trainer. Delete the {CIPA_PLANS_KEY!r} entry and train again "
                "with the CIPA trainer you want, which writes it anew"
            )
        return cls(
            config,
            _channel_value(data.get("ct_channel", 0)),
            _channel_value(data.get("pet_channel", 1)),
            data.get("trainer"),
        )


def _channel_json(channel: int | tuple[int, ...]) -> int | list[int]:
    return channel if isinstance(channel, int) else list(channel)


def _channel_value(channel: Any) -> int | tuple[int, ...]:
    return int(channel) if isinstance(channel, int) else tuple(int(c) for c in channel)
