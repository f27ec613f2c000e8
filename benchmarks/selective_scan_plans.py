"""Calibrate the PyTorch backend's plan choice: sequential vs chunked scan, kept vs blocked tensors.

``nnunetv2_cipa.ops.torch_scan.make_plan`` switches from the two-level chunked scan to the plain
sequential loop at ``SEQ_MIN_SLAB`` elements per time step, and from keeping the forward's tensors
to recomputing them block by block above ``KEEP_ELEMENTS``. This script times forward+backward of
each forced plan on a ladder of per-step slab sizes so that both constants can be re-measured on
the machine at hand (results only change speed, never values). Times are the minimum over
interleaved rounds; on a shared machine run it twice and compare.

Usage::

    python benchmarks/selective_scan_plans.py            # default ladder
    python benchmarks/selective_scan_plans.py --threads 1 --repeats 7
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from nnunetv2_cipa.ops.torch_scan import SEQ_MIN_SLAB, make_plan, selective_scan_torch

# (batch, K, Dk, N, L): per-step slab = batch*K*Dk*N from 256 to 24576 elements.
LADDER = (
    (1, 1, 16, 16, 2048),
    (1, 4, 16, 8, 2048),
    (1, 4, 16, 16, 2048),
    (2, 1, 192, 4, 2048),
    (2, 1, 192, 16, 1536),
    (2, 4, 64, 16, 1024),
    (2, 4, 192, 16, 512),
)
PLANS = {
    "seq kept": {"algorithm": "seq", "block_steps": 10**9, "keep": True},
    "seq blocked": {"algorithm": "seq", "keep": False},
    "chunked kept": {"algorithm": "chunked", "block_steps": 10**9, "keep": True},
    "chunked blocked": {"algorithm": "chunked", "keep": False},
}


def inputs_for(batch: int, groups: int, per_group: int, n_state: int, length: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    channels = groups * per_group
    return {
        "u": torch.randn(batch, channels, length, generator=gen),
        "delta": 0.5 * torch.randn(batch, channels, length, generator=gen),
        "A": -torch.arange(1, n_state + 1, dtype=torch.float32).repeat(channels, 1),
        "B": torch.randn(batch, groups, n_state, length, generator=gen),
        "C": torch.randn(batch, groups, n_state, length, generator=gen),
        "D": torch.ones(channels),
        "delta_bias": torch.full((channels,), -4.0),
    }


def fwd_bwd_seconds(inputs: dict[str, torch.Tensor], plan: dict) -> float:
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    start = time.perf_counter()
    y = selective_scan_torch(**leaves, delta_softplus=True, **plan)
    y.sum().backward()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (minimum reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, fwd+bwd ms "
        f"(min of {args.repeats}); current SEQ_MIN_SLAB = {SEQ_MIN_SLAB}"
    )
    print("| Bt x (K*Dk) x L, N | slab | " + " | ".join(PLANS) + " | automatic plan |")
    print("|" + "---|" * (len(PLANS) + 3))
    for batch, groups, per_group, n_state, length in LADDER:
        inputs = inputs_for(batch, groups, per_group, n_state, length)
        best = {name: float("inf") for name in PLANS}
        for _ in range(args.repeats + 1):  # one extra round: the minimum drops the slower warm-up
            for name, plan in PLANS.items():
                best[name] = min(best[name], fwd_bwd_seconds(inputs, plan))
        slab = batch * groups * per_group * n_state
        auto = make_plan(length, slab)
        cells = " | ".join(f"{best[name] * 1e3:.1f}" for name in PLANS)
        kept = "kept" if auto.keep else "blocked"
        print(
            f"| {batch} x ({groups}*{per_group}) x {length}, {n_state} | {slab} | {cells} "
            f"| {auto.algorithm}, {auto.block_steps} steps, {kept} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
