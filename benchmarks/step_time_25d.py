"""Training-step time of 2.5D CIPA (SIM, stacked slices) relative to the 2D network, same patch and batch.

Usage (from the repository root):

    .venv/bin/python benchmarks/step_time_25d.py                        # small preset, 128x128, batch 2, CPU
    .venv/bin/python benchmarks/step_time_25d.py --preset paper --patch 512 512 --batch 2 --device cuda

One training step = forward with deep supervision, a scalar loss, backward, AdamW step (as in
training). The networks are timed *interleaved* (2D, SIM, stacked, 2D, SIM, ...) within one process,
so that load changes on a shared machine hit every arm alike; medians per arm and the ratios of the
medians are reported, with the load average (timings on a loaded machine are indicative; the ratio
is the figure to quote).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from nnunetv2_cipa.architectures import build_cipa
from nnunetv2_cipa.architectures.counting import count_parameters
from nnunetv2_cipa.architectures.optim import param_groups


def _arms(preset: str, patch: tuple[int, int], k: int) -> dict[str, tuple[torch.nn.Module, int]]:
    slices = list(range(2 * k + 1))
    common = dict(patch_size=patch, deep_supervision=True)
    two_d = build_cipa(preset, **common)
    kw = dict(in_channels=2 * len(slices), ct_channel=slices, pet_channel=[len(slices) + s for s in slices],
              context_slices=k, **common)
    return {
        "2D": (two_d, 2),
        f"2.5D SIM K={k}": (build_cipa(preset, sim=True, **kw), 2 * len(slices)),
        f"2.5D stacked K={k}": (build_cipa(preset, sim=False, **kw), 2 * len(slices)),
    }


def _step_fn(net: torch.nn.Module, channels: int, batch: int, patch, device: torch.device):
    net.to(device).train()
    optimizer = torch.optim.AdamW(param_groups(net, 0.01), lr=1e-4)
    x = torch.randn(batch, channels, *patch, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        outs = net(x)
        outs = outs if isinstance(outs, list) else [outs]
        sum(o.float().square().mean() for o in outs).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--patch", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--context-slices", type=int, default=1, metavar="K")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per arm (after one warm-up)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("step_time_25d.py: error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    patch = (args.patch[0], args.patch[1])
    arms = _arms(args.preset, patch, args.context_slices)
    steps = {name: _step_fn(net, ch, args.batch, patch, device) for name, (net, ch) in arms.items()}
    times: dict[str, list[float]] = {name: [] for name in arms}
    for step in steps.values():
        step()  # warm-up
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CIPA preset {args.preset}, patch {patch[0]}x{patch[1]}, batch {args.batch}, "
          f"device {args.device}, {torch.get_num_threads()} threads, load average {load:.1f} "
          "(shared machine: timings are noisy)")
    base = statistics.median(times["2D"])
    print("| network | parameters | median step s | ratio to 2D |")
    print("|---|---|---|---|")
    for name, (net, _) in arms.items():
        median = statistics.median(times[name])
        print(f"| {name} | {count_parameters(net):,} | {median:.3f} | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
