"""``nnunetv2_cipa params``: parameters (last line, a bare integer) and optionally GFLOPs of a preset."""

from __future__ import annotations

import argparse
import sys

import torch

from nnunetv2_cipa.architectures import PRESETS, build_cipa
from nnunetv2_cipa.architectures.counting import aux_head_parameters, count_flops, count_parameters


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Count the parameters (last line, a bare integer) and optionally the GFLOPs of a "
        "CIPA preset. Defaults reproduce the official model: 3 channels per modality, 512x512.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                        help="network size: paper = the published model, small = CPU-sized (default paper)")
    parser.add_argument("--no-crm", action="store_true", help="drop the channel rectification modules")
    parser.add_argument("--no-dcim", action="store_true", help="drop the cross-modality interaction modules")
    parser.add_argument("--dcim-window", type=int, choices=(2, 4, 8), default=None,
                        help="k, the DCIM window side: k x k local tokens per region (paper: 4)")
    parser.add_argument("--patch", type=int, nargs=2, metavar=("H", "W"), default=(512, 512),
                        help="input patch in pixels (default 512 512, the paper's slices)")
    parser.add_argument("--channels-per-modality", type=int, choices=(1, 3), default=3,
                        help="input channels of the shared patch embedding (official: 3)")
    parser.add_argument("--num-classes", type=int, default=1,
                        help="output channels of the segmentation head (default 1: one sigmoid region)")
    parser.add_argument("--context-slices", type=int, default=0, metavar="K",
                        help="2.5D: K adjacent slices on each side (input 2(2K+1) channels); default 0 = 2D")
    parser.add_argument("--sim", action="store_true",
                        help="with K > 0: slice interaction modules (default with K > 0: stacked slices)")
    parser.add_argument(
        "--flops", action="store_true", help="also count GFLOPs (batch 1), with and without scans"
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa params") -> int:
    args = _parser(prog).parse_args(argv)
    for option, value in (("--num-classes", args.num_classes), ("--patch", min(args.patch))):
        if value < 1:
            print(f"{prog}: error: {option}: must be >= 1, got {value}", file=sys.stderr)
            return 2
    overrides = {}
    if args.no_crm:
        overrides["crm"] = False
    if args.no_dcim:
        overrides["dcim"] = False
    if args.dcim_window is not None:
        overrides["dcim_window"] = args.dcim_window
    k = args.context_slices
    slices = list(range(2 * max(k, 0) + 1))
    try:
        with torch.device("meta"):
            net = build_cipa(
                args.preset,
                num_classes=args.num_classes,
                patch_size=tuple(args.patch),
                channels_per_modality=args.channels_per_modality,
                in_channels=2 * len(slices),
                ct_channel=slices if k else 0,
                pet_channel=[len(slices) + s for s in slices] if k else 1,
                context_slices=k,
                sim=args.sim,
                **overrides,
            )
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    config = net.config
    w = config.dcim_window
    mode = "2D" if not k else f"2.5D, K={k} ({'SIM' if config.sim else 'stacked slices'})"
    print(
        f"preset {args.preset}: crm {'on' if config.crm else 'off'}, dcim {'on' if config.dcim else 'off'}"
        + (f" ({w}x{w} locals per region)" if config.dcim else "")
        + f", patch {args.patch[0]}x{args.patch[1]}, {args.channels_per_modality} channel(s) per modality"
        + f", {mode}"
    )
    if net.slice_interaction is not None:
        print(f"slice interaction modules (in the count below): {count_parameters(net.slice_interaction)} "
              "parameters")
    print(f"deep-supervision heads (not in the count below): {aux_head_parameters(net)} parameters")
    if args.flops:
        report = count_flops(net, (1, 2 * len(slices), *args.patch))
        detail = ", ".join(f"{kind} {v / 1e9:.2f}" for kind, v in sorted(report.by_kind.items()))
        print(f"GFLOPs without selective scans: {report.without_scans / 1e9:.2f}  ({detail})")
        print(f"GFLOPs with selective scans:    {report.with_scans / 1e9:.2f}  "
              f"({report.scan_calls} scan calls, {report.scan_flops / 1e9:.2f})")
    print(count_parameters(net))
    return 0
