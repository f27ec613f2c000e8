"""The measurements behind the PyTorch scan's design choices, in one run (CPU).

Each row compares a choice made in ``nnunetv2_cipa/ops/torch_scan.py`` with its alternative at the
SS2D stage-0 block size (21 steps x 2 x 4 x 16 x 192, about 0.5 M elements), in the backend's state
layout (..., N, Dk):

* ``exp2`` of ``dt (A log2 e)`` against ``exp`` of ``dt A`` (the exponential of every block);
* the state contraction ``y = sum_n C h`` as ``(1 x N) @ (N x Dk)`` on the (N, Dk) state, against
  ``(Dk x N) @ (N x 1)`` on a (Dk, N) state (the form this backend used before);
* page faults and time of whole forward calls at the stage-0 shape (time tiles keep every
  temporary below glibc's mmap limit, so a steady-state call should fault almost no pages).

    python benchmarks/selective_scan_parts.py --threads 2
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selective_scan import SHAPES, make_inputs  # noqa: E402

from nnunetv2_cipa.ops.torch_scan import selective_scan_torch  # noqa: E402


def _median_us(fn, repeats: int = 30) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--calls", type=int, default=4, help="whole forward calls for the page-fault rows")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps, batch, groups, per_group, n = 21, 2, 4, 192, 16
    m = steps * batch * groups
    gen = torch.Generator().manual_seed(0)
    dt = torch.rand(steps, batch, groups, per_group, generator=gen) * 0.1
    A = -torch.arange(1, n + 1, dtype=torch.float32).view(1, n, 1).expand(groups, n, per_group).contiguous()
    A_log2e = A * math.log2(math.e)
    h = torch.randn(m, n, per_group, generator=gen)  # (N, Dk) per (t, batch, k)
    h_dn = h.transpose(1, 2).contiguous()  # the same states in the (Dk, N) layout
    C = torch.randn(m, n, generator=gen)

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; median us per block")
    print("| part | chosen | us | alternative | us | alternative / chosen |")
    print("|---|---|---|---|---|---|")
    rows = [
        (
            "exponential",
            "exp2(dt * A log2e)",
            lambda: torch.mul(dt.unsqueeze(-2), A_log2e).exp2_(),
            "exp(dt * A)",
            lambda: torch.mul(dt.unsqueeze(-2), A).exp_(),
        ),
        (
            "state contraction",
            "bmm (1xN)(NxDk)",
            lambda: torch.bmm(C.view(m, 1, n), h),
            "bmm (DkxN)(Nx1)",
            lambda: torch.bmm(h_dn, C.view(m, n, 1)),
        ),
    ]
    for part, chosen, fn_chosen, other, fn_other in rows:
        t_chosen, t_other = _median_us(fn_chosen), _median_us(fn_other)
        print(f"| {part} | {chosen} | {t_chosen:.0f} | {other} | {t_other:.0f} | {t_other / t_chosen:.2f} |")

    inputs = make_inputs(SHAPES["ss2d-s0"], torch.float32, "cpu")
    print("\n| ss2d-s0 forward call | wall s | minor page faults | system s |")
    print("|---|---|---|---|")
    for call in range(args.calls):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        with torch.no_grad():
            selective_scan_torch(*inputs, delta_softplus=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        print(
            f"| {call + 1} | {wall:.3f} | {after.ru_minflt - before.ru_minflt} | "
            f"{after.ru_stime - before.ru_stime:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
