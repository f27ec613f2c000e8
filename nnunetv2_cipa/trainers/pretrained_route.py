"""Make stock ``nnUNetv2_train ... -pretrained_weights CKPT`` initialise CIPA through the transfer loader.

Why this exists: ``nnUNetv2_train`` hands ``-pretrained_weights`` to ``maybe_load_checkpoint`` in
``nnunetv2/run/run_training.py``, which calls that module's ``load_pretrained_weights(network, fname)``
(``nnunetv2/run/load_pretrained_weights.py``) after ``trainer.initialize()``. That function asserts that
every key of the new network is in the checkpoint with the same shape, except keys containing
``.seg_layers.``; a 2.5D network's slice interaction modules, its inflated patch embedding, or heads
for another number of classes all fail it, and nothing of the trainer is called in between.

The smallest piece that makes the stock command work: when a CIPA trainer is constructed (before
``maybe_load_checkpoint`` runs), :func:`install` replaces the name ``load_pretrained_weights`` in
``nnunetv2.run.run_training`` (only there, once per process) by :func:`route`. ``route`` sends networks
built by a registered CIPA trainer to :func:`nnunetv2_cipa.architectures.transfer.load_cipa_checkpoint`
and writes its report to that trainer's training log; every other network goes to nnU-Net's own
function unchanged. A checkpoint of another architecture stops the run with one line.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

from torch import nn

from nnunetv2_cipa.architectures.transfer import TransferError, load_cipa_checkpoint

_TRAINERS: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


def _unwrap(network: nn.Module) -> nn.Module:
    net = getattr(network, "module", network)  # DDP
    return getattr(net, "_orig_mod", net)  # torch.compile


def register(trainer: Any, network: nn.Module) -> None:
    """Load ``network`` (the trainer's, after ``initialize``) by the CIPA rules, logging to ``trainer``."""
    _TRAINERS[_unwrap(network)] = trainer


def route(network: nn.Module, fname: str, verbose: bool = False) -> None:
    """Replacement of ``nnunetv2.run.run_training.load_pretrained_weights`` (same signature)."""
    net = _unwrap(network)
    trainer = _TRAINERS.get(net)
    if trainer is None:
        return _nnunet_loader()(network, fname, verbose=verbose)
    try:
        report = load_cipa_checkpoint(net, fname)
    except TransferError as exc:
        trainer.print_to_log_file(f"-pretrained_weights refused: {exc}")
        raise SystemExit(f"nnUNetv2_train: error: -pretrained_weights {exc}") from None
    for line in report.lines():
        trainer.print_to_log_file(line)
    trainer.cipa_transfer_report = report
    return None


def _nnunet_loader():
    from nnunetv2.run import load_pretrained_weights as module

    return module.load_pretrained_weights


def install() -> None:
    """Point ``nnunetv2.run.run_training.load_pretrained_weights`` at :func:`route` (idempotent)."""
    module = sys.modules.get("nnunetv2.run.run_training")
    if module is None:
        import nnunetv2.run.run_training as module
    if getattr(module, "load_pretrained_weights", None) is not route:
        module.load_pretrained_weights = route
