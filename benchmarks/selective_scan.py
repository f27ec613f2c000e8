"""Benchmark the selective-scan backends at the CIPA shapes; one table, all rows from one run.

Usage::

    python benchmarks/selective_scan.py                    # all shapes, CPU (+ cuda/mamba on a GPU)
    python benchmarks/selective_scan.py --quick            # fewer repeats, smaller set (a check)
    python benchmarks/selective_scan.py --shapes ss2d-s0 --methods torch,reference

Methods:
  reference    the plain loop oracle (nnunetv2_cipa.ops.reference); slow. When its autograd
               graph would exceed --ref-max-elements it is timed on the first L' steps and scaled
               by L/L' (its cost is exactly linear in L); such cells are marked '*'.
  torch        our PyTorch backend (blocked, analytic backward).
  fulltensor   the straightforward vectorised CPU design, as a yardstick: full (L, batch, K, Dk, N)
               tensors, autograd for prologue/epilogue, one autograd.Function around a sequential
               scan over time. Skipped (noted) where its ~6 full tensors would exceed
               --full-max-bytes.
  cuda, mamba  on a GPU only: our kernel and mamba-ssm's (when installed).

Times are medians over interleaved rounds (methods alternate within a round; a warm-up round is not
counted). fwd = forward under no_grad; f+b = forward with grad + backward. GB/s = the bytes a call must
move at minimum (``min_bytes``: every operand read once, outputs written once) / median time. Ratios are
against `torch` of the same shape and run. cpu-ms = process CPU time (all threads): on a shared machine
it is far less disturbed by foreign load than wall time, especially with --threads 1.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from nnunetv2_cipa.ops import selective_scan
from nnunetv2_cipa.ops.reference import selective_scan_reference


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    groups: int  # K
    per_group: int  # Dk
    n_state: int
    length: int
    note: str


SHAPES = {
    "ss2d-s0": Shape("ss2d-s0", 2, 4, 192, 16, 128 * 128, "encoder SS2D stage 0 at 512^2"),
    "ss2d-s2": Shape("ss2d-s2", 2, 4, 768, 16, 32 * 32, "encoder SS2D stage 2 at 512^2"),
    "dec-s0": Shape("dec-s0", 2, 4, 192, 4, 128 * 128, "decoder CVSS (N=4) at the 96-channel level"),
    "crm-s0": Shape("crm-s0", 2, 1, 192, 16, 2 * 96, "CRM SS1D over 2C channel tokens, stage 0"),
    "crm-s3": Shape("crm-s3", 2, 1, 192, 16, 2 * 768, "CRM SS1D over 2C channel tokens, stage 3"),
    "doc-ss2d": Shape("doc-ss2d", 2, 4, 192, 16, 64 * 64, "an SS2D stage-0 shape at 256^2 input"),
}
QUICK_SHAPES = ("ss2d-s2", "crm-s3")


def make_inputs(shape: Shape, dtype: torch.dtype, device: str, seed: int = 0):
    """VMamba initialisation: A = -(1..N), dt0 log-uniform in [1e-3, 1e-1], softplus on."""
    gen = torch.Generator().manual_seed(seed)
    channels = shape.groups * shape.per_group
    b, n, L = shape.batch, shape.n_state, shape.length
    u = torch.randn(b, channels, L, generator=gen)
    delta = 0.5 * torch.randn(b, channels, L, generator=gen)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(channels, 1)
    B = torch.randn(b, shape.groups, n, L, generator=gen)
    C = torch.randn(b, shape.groups, n, L, generator=gen)
    D = torch.ones(channels)
    dt0 = torch.exp(torch.rand(channels, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    bias = dt0 + torch.log(-torch.expm1(-dt0))  # softplus^-1(dt0)
    cast = [u.to(dtype), delta.to(dtype), A, B.to(dtype), C.to(dtype), D, bias]
    return [t.to(device) for t in cast]


def min_bytes(shape: Shape, itemsize: int) -> tuple[int, int]:
    """(forward, forward+backward) bytes that must move at least: every operand read once, every output
    written once, no state materialised (dB, dC accumulated in fp32)."""
    channels = shape.groups * shape.per_group
    bl = shape.batch * shape.length
    gn = shape.groups * shape.n_state
    fwd = bl * (channels * 3 * itemsize + gn * 2 * itemsize)
    bwd = bl * (channels * 5 * itemsize + gn * (2 * itemsize + 8))
    return fwd, fwd + bwd


# ------------------------------------------------------------------- the full-tensor yardstick


class _SeqScan(torch.autograd.Function):
    """h_t = a_t h_{t-1} + x_t over dim 0 of full tensors; backward = reverse scan."""

    @staticmethod
    def forward(ctx, a, x):
        h = x.clone()
        hs, as_ = h.unbind(0), a.unbind(0)
        for t in range(1, h.shape[0]):
            hs[t].addcmul_(as_[t], hs[t - 1])
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, g):
        a, h = ctx.saved_tensors
        g = g.clone()
        gs, as_ = g.unbind(0), a.unbind(0)
        for t in range(g.shape[0] - 2, -1, -1):
            gs[t].addcmul_(as_[t + 1], gs[t + 1])
        ga = torch.zeros_like(a)
        ga[1:] = g[1:] * h[:-1]
        return ga, g


def fulltensor_seq(u, delta, A, B, C, D, delta_bias, delta_softplus=True):
    batch, channels, length = u.shape
    groups, n = B.shape[1], B.shape[2]
    per_group = channels // groups
    shape4 = (length, batch, groups, per_group)
    u_t = u.float().permute(2, 0, 1).contiguous().view(shape4)
    v = delta.float().permute(2, 0, 1).contiguous() + delta_bias
    dt = (torch.nn.functional.softplus(v) if delta_softplus else v).view(shape4)
    B_t = B.float().permute(3, 0, 1, 2).contiguous()
    C_t = C.float().permute(3, 0, 1, 2).contiguous()
    a = torch.exp(dt.unsqueeze(-1) * A.view(groups, per_group, n))
    x = (dt * u_t).unsqueeze(-1) * B_t.unsqueeze(-2)
    h = _SeqScan.apply(a, x)
    y = (h * C_t.unsqueeze(-2)).sum(-1) + D.view(groups, per_group) * u_t
    return y.view(length, batch, channels).permute(1, 2, 0).contiguous().to(u.dtype)


# ------------------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _runner(method: str, inputs, grad_out, device: str, with_grad: bool):
    def call(args):
        if method == "reference":
            return selective_scan_reference(*args, delta_softplus=True)
        if method == "fulltensor":
            return fulltensor_seq(*args)
        return selective_scan(*args, delta_softplus=True, backend=method)

    if not with_grad:
        def run():
            with torch.no_grad():
                call(inputs)
            _sync(device)
        return run

    leaves = [t.detach().clone().requires_grad_() for t in inputs]

    def run():
        for t in leaves:
            t.grad = None
        call(leaves).backward(grad_out)
        _sync(device)
    return run


def _truncate(inputs, length):
    out = []
    for i, t in enumerate(inputs):
        out.append(t[..., :length].contiguous() if i in (0, 1, 3, 4) else t)
    return out


def bench_shape(shape: Shape, methods, args, dtype, device):
    inputs = make_inputs(shape, dtype, device)
    grad_out = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1)).to(dtype).to(device)
    full_elems = shape.batch * shape.groups * shape.per_group * shape.n_state * shape.length
    plans, notes = {}, []
    for method in methods:
        scale = 1.0
        use_inputs, use_grad = inputs, grad_out
        if method == "reference" and full_elems > args.ref_max_elements:
            steps = max(1, args.ref_max_elements * shape.length // full_elems)
            scale = shape.length / steps
            use_inputs, use_grad = _truncate(inputs, steps), grad_out[..., :steps].contiguous()
            notes.append(f"reference timed on L'={steps} of {shape.length} steps and scaled x{scale:.1f} (*)")
        if method == "fulltensor" and 6 * full_elems * 4 > args.full_max_bytes:
            notes.append(f"fulltensor skipped: ~6 x {full_elems * 4 / 1e9:.1f} GB tensors exceed "
                         f"--full-max-bytes")
            continue
        plans[method] = {
            "fwd": _runner(method, use_inputs, use_grad, device, False),
            "f+b": _runner(method, use_inputs, use_grad, device, True),
            "scale": scale,
        }
    times = {(m, k): [] for m in plans for k in ("fwd", "f+b")}
    cpu_times = {(m, k): [] for m in plans for k in ("fwd", "f+b")}
    for round_index in range(args.repeats + 1):
        for kind in ("fwd", "f+b"):
            for method, plan in plans.items():
                if method == "reference" and round_index > args.ref_repeats:
                    continue
                start, cpu_start = time.perf_counter(), time.process_time()
                plan[kind]()
                elapsed = (time.perf_counter() - start) * plan["scale"]
                cpu = (time.process_time() - cpu_start) * plan["scale"]
                if round_index > 0:  # round 0 is the warm-up
                    times[(method, kind)].append(elapsed)
                    cpu_times[(method, kind)].append(cpu)
    medians = {key: statistics.median(v) for key, v in times.items() if v}
    cpu_medians = {key: statistics.median(v) for key, v in cpu_times.items() if v}
    return medians, cpu_medians, plans, notes


def _mamba_available() -> bool:
    from nnunetv2_cipa.ops import mamba_backend

    return mamba_backend.available()


def copy_bandwidth(device: str, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Achievable memory bandwidth (bytes read + written per second) of a large device copy, this run."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        samples.append(time.perf_counter() - start)
    return 2 * nbytes / statistics.median(samples)


def gpu_ratio_lines(results, floors: dict[tuple[str, str], float]) -> list[str]:
    """GPU comparisons on this run: cuda against mamba (same run) and against the traffic floor.

    ``floors[(shape, kind)]`` is the time the minimum bytes take at the copy bandwidth measured in
    this run (a roofline floor: a scan cannot move its bytes faster than a plain copy does).
    """
    lines = []
    for (name, method), (tf, tfb, _) in results.items():
        if method != "cuda":
            continue
        mamba = results.get((name, "mamba"))
        if mamba:
            for kind, ours, theirs in (("fwd", tf, mamba[0]), ("f+b", tfb, mamba[1])):
                lines.append(f"ratio: cuda {kind} / mamba {kind} at {name}: {ours / theirs:.2f}")
        for kind, ours in (("fwd", tf), ("f+b", tfb)):
            lines.append(f"ratio: cuda {kind} / memory-traffic floor at {name}: "
                         f"{ours / floors[(name, kind)]:.2f}")
    return lines


def cpu_ratio_lines(results: dict[tuple[str, str], tuple[float, float, bool]]) -> list[str]:
    """CPU comparisons on this run's medians (forward+backward): reference and fulltensor against torch."""
    lines = []
    ref, ours = results.get(("ss2d-s0", "reference")), results.get(("ss2d-s0", "torch"))
    if ref and ours:
        how = " (reference scaled from its truncated run, see the notes)" if ref[2] else ""
        lines.append(f"ratio: reference f+b / torch f+b at ss2d-s0: {ref[1] / ours[1]:.2f}{how}")
    for (name, method), (_, tfb, _) in results.items():
        if method == "fulltensor" and (name, "torch") in results:
            ratio = results[(name, "torch")][1] / tfb
            lines.append(f"ratio: torch f+b / fulltensor f+b at {name}: {ratio:.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=None, help=f"comma list from {sorted(SHAPES)} (default: all)")
    parser.add_argument("--methods", default=None,
                        help="comma list of reference,torch,fulltensor,cuda,mamba (default: all available)")
    parser.add_argument("--quick", action="store_true",
                        help="1 timed round, shapes " + ",".join(QUICK_SHAPES))
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--ref-repeats", type=int, default=1, help="timed rounds for the slow reference")
    parser.add_argument("--ref-max-elements", type=int, default=1 << 26,
                        help="largest L*batch*K*D*N the reference runs on in full (else truncated, scaled)")
    parser.add_argument("--full-max-bytes", type=float, default=6e9, help="memory cap for 'fulltensor'")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats = 1
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    names = args.shapes.split(",") if args.shapes else list(QUICK_SHAPES if args.quick else SHAPES)
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        parser.error(f"--shapes: unknown {unknown}; choose from {sorted(SHAPES)}")
    methods = ["reference", "torch", "fulltensor"]
    if device == "cuda":
        methods.append("cuda")
        if _mamba_available():
            methods.append("mamba")
    if args.methods:
        wanted = args.methods.split(",")
        bad = [m for m in wanted if m not in ("reference", "torch", "fulltensor", "cuda", "mamba")]
        if bad:
            parser.error(f"--methods: unknown {bad}")
        methods = [m for m in wanted if device == "cuda" or m not in ("cuda", "mamba")]
        if "mamba" in methods and not _mamba_available():
            print("note: mamba-ssm's selective_scan_cuda is not importable; the mamba column is left out")
            methods.remove("mamba")

    print(f"# selective_scan benchmark: device={device}, torch {torch.__version__}, threads="
          f"{torch.get_num_threads()}, dtype={args.dtype}, rounds={args.repeats} (median)")
    header = ("| shape | Bt x (K*Dk) x L, N | method | fwd ms | f+b ms | fwd x torch | f+b x torch | "
              "fwd GB/s | f+b GB/s | fwd cpu-ms | f+b cpu-ms | f+b cpu x torch |")
    print(header)
    print("|" + "---|" * 12)
    all_notes = []
    results: dict[tuple[str, str], tuple[float, float, bool]] = {}
    floors: dict[tuple[str, str], float] = {}
    itemsize = torch.empty((), dtype=dtype).element_size()
    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    for name in names:
        shape = SHAPES[name]
        medians, cpu_medians, plans, notes = bench_shape(shape, methods, args, dtype, device)
        all_notes += [f"{name}: {n}" for n in notes]
        fwd_bytes, fb_bytes = min_bytes(shape, itemsize)
        dims = f"{shape.batch} x ({shape.groups}*{shape.per_group}) x {shape.length}, {shape.n_state}"
        base_f, base_fb = medians.get(("torch", "fwd")), medians.get(("torch", "f+b"))
        base_cpu = cpu_medians.get(("torch", "f+b"))
        if bandwidth:
            floors[(name, "fwd")], floors[(name, "f+b")] = fwd_bytes / bandwidth, fb_bytes / bandwidth
        for method in plans:
            tf, tfb = medians.get((method, "fwd")), medians.get((method, "f+b"))
            mark = "*" if plans[method]["scale"] != 1.0 else ""
            results[(name, method)] = (tf, tfb, bool(mark))

            def ratio(t, base):
                return f"{t / base:.2f}" if (t and base) else "-"

            print(f"| {name} | {dims} | {method} | {tf * 1e3:.1f}{mark} | {tfb * 1e3:.1f}{mark} | "
                  f"{ratio(tf, base_f)} | {ratio(tfb, base_fb)} | {fwd_bytes / tf / 1e9:.2f} | "
                  f"{fb_bytes / tfb / 1e9:.2f} | {cpu_medians[(method, 'fwd')] * 1e3:.1f}{mark} | "
                  f"{cpu_medians[(method, 'f+b')] * 1e3:.1f}{mark} | "
                  f"{ratio(cpu_medians[(method, 'f+b')], base_cpu)} |", flush=True)
    for line in cpu_ratio_lines(results):
        print(line)
    if bandwidth:
        print(f"note: device copy bandwidth this run {bandwidth / 1e9:.0f} GB/s (read + write); "
              f"floor = minimum bytes / that bandwidth")
        for line in gpu_ratio_lines(results, floors):
            print(line)
    for note in all_notes:
        print(f"note: {note}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"note: peak RSS of this process {rss:.2f} GB (all methods and shapes together)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
