"""Time the CIPA network: CPU forward / forward+backward at batch 1, GPU training step at batch 8.

Usage (from the repository root):

    .venv/bin/python benchmarks/network.py                      # paper preset, 512x512, CPU (+ GPU if any)
    .venv/bin/python benchmarks/network.py --device cuda --gpu-batch 8 --repeats 5
    .venv/bin/python benchmarks/network.py --preset small --patch 128 128 --device cpu

CPU: batch 1, ``--repeats`` timed runs after one warm-up, median reported. "forward" is eval mode under
``no_grad``; "forward+backward" is train mode with a scalar loss. The forward is also run with every
selective scan replaced by an empty tensor (``blocks.scan_call.tally_scans``), so the table splits the
time into network and scans. GPU: a full training step (forward with deep supervision, loss, backward,
AdamW step) at ``--gpu-batch`` in fp32 and in bf16 autocast (scans stay fp32), with peak memory.

Timings on a shared machine are noisy: the script prints the load average next to the numbers, and
medians are reported for that reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from nnunetv2_cipa.architectures import build_cipa
from nnunetv2_cipa.architectures.counting import count_parameters
from nnunetv2_cipa.architectures.optim import param_groups
from nnunetv2_cipa.blocks.scan_call import tally_scans


def _median_seconds(fn: Callable[[], None], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()  # warm-up (allocations, kernel choice, lazy extension load)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _loss(out) -> torch.Tensor:
    outs = out if isinstance(out, list) else [out]
    return sum(o.float().square().mean() for o in outs)


def bench_cpu(args) -> list[dict]:
    torch.manual_seed(0)
    net = build_cipa(
        args.preset, patch_size=tuple(args.patch), channels_per_modality=args.channels_per_modality
    )
    x = torch.randn(1, 2, *args.patch)
    rows = []

    net.eval()

    def forward():
        with torch.no_grad():
            net(x)

    def forward_no_scan():
        with torch.no_grad(), tally_scans():
            net(x)

    t_fwd = _median_seconds(forward, args.repeats)
    t_noscan = _median_seconds(forward_no_scan, args.repeats)
    rows.append(
        {
            "device": "cpu",
            "what": "forward (eval)",
            "batch": 1,
            "dtype": "fp32",
            "seconds": t_fwd,
            "note": f"network without scans {t_noscan:.2f} s, scans {t_fwd - t_noscan:.2f} s",
        }
    )
    if not args.skip_backward:
        net.train()

        def forward_backward():
            net.zero_grad(set_to_none=True)
            _loss(net(x)).backward()

        rows.append(
            {
                "device": "cpu",
                "what": "forward+backward (train)",
                "batch": 1,
                "dtype": "fp32",
                "seconds": _median_seconds(forward_backward, args.repeats),
                "note": "",
            }
        )
    return rows


def _bench_gpu_dtype(args, dtype_name: str) -> list[dict]:
    """Training step and forward at ``--gpu-batch`` in one precision; frees its memory on return."""
    torch.manual_seed(0)
    name = torch.cuda.get_device_name()
    net = (
        build_cipa(
            args.preset,
            patch_size=tuple(args.patch),
            deep_supervision=True,
            channels_per_modality=args.channels_per_modality,
        )
        .cuda()
        .train()
    )
    optimizer = torch.optim.AdamW(param_groups(net, 0.01), lr=1e-4)
    x = torch.randn(args.gpu_batch, 2, *args.patch, device="cuda")
    use_bf16 = dtype_name == "bf16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = _loss(net(x))
        loss.backward()
        optimizer.step()

    def forward():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            net(x)

    torch.cuda.reset_peak_memory_stats()
    t_step = _median_seconds(step, args.repeats, torch.cuda.synchronize)
    peak = torch.cuda.max_memory_allocated() / 2**30
    net.eval()
    t_fwd = _median_seconds(forward, args.repeats, torch.cuda.synchronize)
    common = {"device": name, "batch": args.gpu_batch, "dtype": dtype_name}
    return [
        {
            **common,
            "what": "training step (DS, AdamW)",
            "seconds": t_step,
            "note": f"peak memory {peak:.1f} GiB",
        },
        {**common, "what": "forward (eval)", "seconds": t_fwd, "note": ""},
    ]


def bench_gpu(args) -> list[dict]:
    rows = []
    for dtype_name in ("bf16", "fp32"):
        rows += _bench_gpu_dtype(args, dtype_name)
        torch.cuda.empty_cache()
    return rows


def _table(rows: list[dict]) -> str:
    lines = ["| device | measurement | batch | dtype | median s | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["device"], r["what"], r["batch"], r["dtype"], f"{r['seconds']:.3f}", r["note"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--patch", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--channels-per-modality", type=int, default=1, choices=(1, 3))
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CPU, plus GPU when CUDA is available",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--gpu-batch", type=int, default=8)
    parser.add_argument("--skip-backward", action="store_true", help="CPU: forward only")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("network.py: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2

    rows = []
    if args.device in ("auto", "cpu"):
        rows += bench_cpu(args)
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        rows += bench_gpu(args)
    with torch.device("meta"):
        n_params = count_parameters(
            build_cipa(
                args.preset, patch_size=tuple(args.patch), channels_per_modality=args.channels_per_modality
            )
        )
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("n/a",)
    print(
        f"CIPA preset {args.preset}, patch {args.patch[0]}x{args.patch[1]}, {n_params} parameters; "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{platform.processor() or 'cpu'}, load average {load[0]} (shared machine: timings are noisy)"
    )
    print(_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent, delete=False, suffix=".tmp") as tmp:
            json.dump({"preset": args.preset, "patch": list(args.patch), "rows": rows}, tmp, indent=1)
        os.replace(tmp.name, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
