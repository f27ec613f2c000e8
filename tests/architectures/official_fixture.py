"""A stand-in for the released ``CIPA.pth``: the official names, shapes and dtypes, random values.

Values are drawn per kind of tensor so that the 512x512 forward stays well conditioned (norm weights
near 1, positive running variances, SSM decay rates and step biases in their usual ranges, weights
scaled by fan-in); nothing here comes from the official code.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from nnunetv2_cipa.architectures.official import official_tensors


def random_official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, scale):
        return torch.randn(shape, generator=generator) * scale

    state = {}
    for tensor in official_tensors():
        name, shape = tensor.name, tensor.shape
        leaf = name.rsplit(".", 1)[-1]
        if tensor.dtype == torch.int64:
            value = torch.tensor(1000, dtype=torch.int64)
        elif leaf == "running_var":
            value = 0.5 + torch.rand(shape, generator=generator)
        elif leaf == "running_mean":
            value = normal(shape, 0.1)
        elif leaf == "A_logs":
            value = torch.log(1 + 15 * torch.rand(shape, generator=generator))
        elif leaf == "dt_projs_bias":
            value = -6 + 4 * torch.rand(shape, generator=generator)
        elif leaf in ("Ds", "scale1", "scale2") or (len(shape) == 1 and leaf == "weight"):
            value = 1 + normal(shape, 0.1)
        elif len(shape) == 1:
            value = normal(shape, 0.02)
        else:
            value = normal(shape, 1 / math.sqrt(math.prod(shape[1:]) if len(shape) > 1 else 1))
        state[name] = value.to(tensor.dtype)
    return state


def save_official_file(path: Path, seed: int = 0, with_args: bool = False) -> Path:
    """Save as the official code does: ``{'model': sd}``, or train.py's dict with an ``args`` Namespace."""
    content: dict = {"model": random_official_state_dict(seed)}
    if with_args:
        content.update(
            optimizer={"state": {}, "param_groups": [{"lr": 6e-5, "params": [0, 1]}]},
            epoch=49,
            args=argparse.Namespace(lr=6e-5, epochs=50, batch_size=4, img_dir="data/PCLT20k/", amp=True),
            scaler={"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        )
    torch.save(content, path)
    return path
