"""Compare versions of the PyTorch scan in one process, rounds interleaved (CPU, fwd+bwd).

Why: on a shared or virtual machine the speed drifts between runs minutes apart (we saw 1.7x), so a
change to ``nnunetv2_cipa/ops/torch_scan.py`` can only be judged against the old code in the same
process, alternating calls. Each file given is loaded as its own module (the file must be a
self-contained copy of ``torch_scan.py``, e.g. from ``git show``), and all run the same inputs:

    git show HEAD~1:nnunetv2_cipa/ops/torch_scan.py > /tmp/old_scan.py
    python benchmarks/compare_scan_versions.py /tmp/old_scan.py nnunetv2_cipa/ops/torch_scan.py --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selective_scan import SHAPES, make_inputs  # noqa: E402


def load_version(path: Path, index: int):
    """Import one copy of torch_scan.py under a name of its own."""
    if not path.is_file():
        raise SystemExit(f"compare_scan_versions: {path}: no such file")
    name = f"_scan_version_{index}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"compare_scan_versions: {path}: not a Python (.py) file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a syntax error, an import error: one line naming the file
        problem = f"{type(exc).__name__}: {exc}"
        raise SystemExit(f"compare_scan_versions: {path}: does not load ({problem})") from None
    if not hasattr(module, "selective_scan_torch"):
        raise SystemExit(f"compare_scan_versions: {path}: defines no selective_scan_torch")
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="copies of torch_scan.py to compare")
    parser.add_argument("--shape", default="ss2d-s0", choices=sorted(SHAPES))
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (one warm-up round more)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    versions = [(str(path), load_version(path, i)) for i, path in enumerate(args.files)]
    inputs = make_inputs(SHAPES[args.shape], torch.float32, "cpu")
    leaves = [t.clone().requires_grad_() for t in inputs]
    grad = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1))
    times: dict[str, list[float]] = {name: [] for name, _ in versions}
    for round_index in range(args.rounds + 1):
        for name, module in versions:
            for t in leaves:
                t.grad = None
            start = time.perf_counter()
            module.selective_scan_torch(*leaves, delta_softplus=True).backward(grad)
            if round_index:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    print(
        f"# {args.shape}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"fwd+bwd seconds, {args.rounds} interleaved rounds"
    )
    print("| version | median | rounds | median / first version |")
    print("|---|---|---|---|")
    first = statistics.median(times[versions[0][0]])
    for name, _ in versions:
        median = statistics.median(times[name])
        rounds = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"| {name} | {median:.3f} | {rounds} | {median / first:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
