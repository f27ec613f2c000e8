"""AdamW parameter groups that cover EVERY parameter of the network.

The official grouping (``utils/init_func.py::group_weight``) walks modules and only collects Linear,
Conv and norm parameters, so bare ``nn.Parameter``s (all SSM tensors and the CVSS scales: 219 tensors,
8.67M parameters) were never handed to the optimizer and stayed frozen (docs/official_model.md). Here
the grouping walks parameters, not modules, and checks that nothing is left out.

Weight decay goes on matrices and kernels (>= 2-D weights: Linear, Conv, and the SSM projections
``x_proj_weight`` / ``dt_projs_weight``). No decay on biases, norm parameters, the CVSS scales and the
SSM dynamics parameters ``A_logs``, ``Ds``, ``dt_projs_bias`` (mamba-ssm marks these ``_no_weight_decay``:
decaying them pulls the state decay rates and skip gains towards zero).
"""

from __future__ import annotations

from typing import Any

from torch import nn

NO_DECAY_NAMES = ("A_logs", "Ds", "dt_projs_bias")


def _wants_decay(name: str, param: nn.Parameter) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim >= 2 and leaf not in NO_DECAY_NAMES


def param_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups (decay / no decay) that together hold every trainable parameter exactly once."""
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        (decay if _wants_decay(name, param) else no_decay).append(param)
    covered = {id(p) for p in decay} | {id(p) for p in no_decay}
    expected = {id(p) for p in net.parameters() if p.requires_grad}
    if covered != expected:  # cannot happen with named_parameters(); guards future edits
        raise RuntimeError("param_groups: some trainable parameters are in no optimizer group")
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
