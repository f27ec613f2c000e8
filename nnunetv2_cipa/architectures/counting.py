"""Parameter and FLOP counts of CIPA configurations (the ``nnunetv2_cipa params`` command prints them).

Parameters: counted without the deep-supervision heads (they are not part of the paper model; see
``blocks.decoder``), which reproduces the official counts exactly (paper Table 4; the whole table in
docs/official_model.md).

FLOPs are counted like the official ``EncoderDecoder.flops()`` (``models/builder.py``): fvcore with the
op table the official code passes, so the numbers are comparable with the paper's and the official code's:

* one FLOP per multiply-accumulate for matrix products (linear, einsum, bmm) and convolutions,
  biases and element-wise activations not counted;
* LayerNorm 5 per element (4 without affine), eval-mode BatchNorm 2 per element, bilinear
  upsampling 4 per output element, adaptive average pooling 1 per input element, max pooling 0;
* the selective scans, which the official counter silently skips (its op table names other autograd
  Functions than the ones traced), are reported separately with VMamba's formula
  ``9 * B * L * D * N + B * D * L`` per call.

How: the network is built and run once on the meta device (no memory, no arithmetic), a
TorchDispatchMode sums the formulas above over the aten ops, and ``blocks.scan_call.tally_scans``
records every scan call instead of running it.

Known difference to the official 74.32 G / 101.36 G at 512x512: the official decoder calls bilinear
"resizes" to sizes that are already equal (3 skips, plus the final resize of the logits), which fvcore
counts (about 0.012 G); this implementation skips no-op resizes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from nnunetv2_cipa.blocks.scan_call import tally_scans

aten = torch.ops.aten


def count_parameters(net: nn.Module, include_aux_heads: bool = False) -> int:
    """Number of parameters; by default without the deep-supervision heads (paper parity)."""
    return sum(
        p.numel()
        for name, p in net.named_parameters()
        if include_aux_heads or ".aux_heads." not in f".{name}"
    )


def aux_head_parameters(net: nn.Module) -> int:
    """Parameters of the deep-supervision heads alone."""
    return count_parameters(net, include_aux_heads=True) - count_parameters(net, include_aux_heads=False)


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


def _mm(args, out) -> int:
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * b.shape[1]


def _addmm(args, out) -> int:
    return _mm(args[1:], out)


def _bmm(args, out) -> int:
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _baddbmm(args, out) -> int:
    return _bmm(args[1:], out)


def _convolution(args, out) -> int:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    spatial = x.shape[2:] if transposed else out.shape[2:]
    return x.shape[0] * _numel(w.shape) * _numel(spatial)


def _layer_norm(args, out) -> int:
    has_affine = len(args) > 2 and args[2] is not None
    return _numel(args[0].shape) * (5 if has_affine else 4)


def _batch_norm_eval(args, out) -> int:
    has_affine = args[1] is not None
    return _numel(args[0].shape) * (2 if has_affine else 1)


def _batch_norm(args, out) -> int:
    training = bool(args[5])
    if training:
        return _numel(args[0].shape) * (5 if args[1] is not None else 4)
    return _batch_norm_eval(args, out)


def _upsample_bilinear(args, out) -> int:
    result = out[0] if isinstance(out, (tuple, list)) else out
    return 4 * _numel(result.shape)


def _adaptive_avg_pool(args, out) -> int:
    return _numel(args[0].shape)


_FORMULAS = {
    aten.mm.default: ("matmul", _mm),
    aten.addmm.default: ("matmul", _addmm),
    aten.bmm.default: ("matmul", _bmm),
    aten.baddbmm.default: ("matmul", _baddbmm),
    aten.convolution.default: ("conv", _convolution),
    aten.native_layer_norm.default: ("layer_norm", _layer_norm),
    aten._native_batch_norm_legit_no_training.default: ("batch_norm", _batch_norm_eval),
    aten.native_batch_norm.default: ("batch_norm", _batch_norm),
    # adaptive_avg_pool2d(x, 1) dispatches as a mean over H, W; the network has no other aten.mean
    aten.mean.dim: ("pooling", _adaptive_avg_pool),
    aten.upsample_bilinear2d.vec: ("upsample", _upsample_bilinear),
    aten.upsample_bilinear2d.default: ("upsample", _upsample_bilinear),
    aten._adaptive_avg_pool2d.default: ("pooling", _adaptive_avg_pool),
}


class _FlopCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.by_kind: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        entry = _FORMULAS.get(func)
        if entry is not None:
            self.by_kind[entry[0]] += int(entry[1](args, out))
        return out


@dataclass
class FlopReport:
    """FLOPs (multiply-accumulates, fvcore convention) of one forward."""

    by_kind: dict[str, int] = field(default_factory=dict)
    scan_flops: int = 0
    scan_calls: int = 0

    @property
    def without_scans(self) -> int:
        return sum(self.by_kind.values())

    @property
    def with_scans(self) -> int:
        return self.without_scans + self.scan_flops


def count_flops(net: nn.Module, input_shape: tuple[int, ...]) -> FlopReport:
    """FLOPs of ``net`` on an input of ``input_shape``, counted on the meta device (see module doc).

    ``net`` may live on any device; a meta copy is made (cheap: no storage) and run in eval mode.
    """
    import copy

    meta_net = copy.deepcopy(net).to("meta") if next(net.parameters()).device.type != "meta" else net
    meta_net.eval()
    counter = _FlopCounter()
    with torch.no_grad(), tally_scans() as tally, counter:
        meta_net(torch.empty(input_shape, device="meta"))
    return FlopReport(dict(counter.by_kind), tally.flops, tally.calls)
