"""Time ``import-official`` and a 512x512 ``nnUNetv2_predict`` on CPU beside the bare network forward.

Usage (from the repository root):

    .venv/bin/python benchmarks/official_predict.py                    # stand-in checkpoint
    .venv/bin/python benchmarks/official_predict.py --checkpoint CIPA.pth   # the released file

In one run, in temporary nnU-Net folders: (1) without ``--checkpoint``, a stand-in with the release's
names, shapes and dtypes is written from our freshly initialised paper network (the values do not matter
for timing); (2) ``nnunetv2_cipa import-official`` is timed as a command (interpreter start included);
(3) a two-slice PCLT20K-style tree of 512x512 PNGs is converted with ``nnunetv2_cipa convert pclt20k``;
(4) ``nnUNetv2_predict -device cpu --disable_tta`` on its one test slice is timed as a command;
(5) ``benchmarks/network.py --skip-backward`` gives the bare forward of the same network. The difference
(4) - (5) is the predictor's overhead (start-up, network build, checkpoint load, preprocessing, export).
Timings on a shared machine are noisy: the load average is printed next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from nnunetv2_cipa.architectures import build_cipa
from nnunetv2_cipa.architectures.official import PATCH_EMBED_KEY, official_tensors, official_to_ours
from nnunetv2_cipa.synthetic.pclt20k_tree import TreeSpec, write_pclt20k_tree

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATASET_ID = 990


def write_stand_in(path: Path) -> None:
    """The release's layout filled from our initial weights (patch kernel spread over 3 channels)."""
    torch.manual_seed(0)
    ours = build_cipa("paper", num_classes=1).state_dict()
    state = {}
    for tensor in official_tensors():
        value = ours[official_to_ours(tensor.name)]
        if official_to_ours(tensor.name) == PATCH_EMBED_KEY:
            value = value.repeat(1, 3, 1, 1) / 3
        state[tensor.name] = value.clone()
    torch.save({"model": state}, path)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of a command (CPU time is less distorted by other jobs on the machine)."""
    start, cpu = time.perf_counter(), _children_cpu()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return seconds, _children_cpu() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="the released CIPA.pth (default: stand-in)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every step (default 2)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cipa_official_bench_") as tmp:
        tmp = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (tmp / name).mkdir()
            env[name] = str(tmp / name)
        env.update(
            {"OMP_NUM_THREADS": str(args.threads), "nnUNet_def_n_proc": "1", "nnUNet_compile": "false"}
        )
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = tmp / "stand_in_CIPA.pth"
            write_stand_in(checkpoint)
        t_import = timed(
            [str(BIN / "nnunetv2_cipa"), "import-official", str(checkpoint), "--dataset-id", str(DATASET_ID)],
            env,
        )
        tree = tmp / "PCLT20K"  # one 512x512 train and one held-out pair
        write_pclt20k_tree(tree, TreeSpec(patients=2, slices=1, test_patients=1))
        timed(
            [str(BIN / "nnunetv2_cipa"), "convert", "pclt20k", str(tree), "--dataset-id", "501", "--quiet"],
            env,
        )
        images = tmp / "nnUNet_raw" / "Dataset501_PCLT20K" / "imagesTs"
        predict = [
            str(BIN / "nnUNetv2_predict"),
            "-i",
            str(images),
            "-o",
            str(tmp / "pred"),
            "-d",
            str(DATASET_ID),
        ]
        predict += ["-c", "2d", "-f", "all", "-tr", "nnUNetTrainerCIPA", "-device", "cpu", "--disable_tta"]
        predict += ["-npp", "1", "-nps", "1"]
        t_predict = timed(predict, env)
        rows_file = tmp / "network.json"
        network = [
            sys.executable,
            str(ROOT / "benchmarks" / "network.py"),
            "--device",
            "cpu",
            "--skip-backward",
        ]
        network += ["--repeats", "1", "--threads", str(args.threads), "--json", str(rows_file)]
        _, network_cpu = timed(network, env)
        forward = json.loads(rows_file.read_text())["rows"][0]["seconds"]
    load = os.getloadavg()
    print(
        f"threads {args.threads}, torch {torch.__version__}, load average {load[0]:.2f} {load[1]:.2f} "
        "(shared machine: timings are noisy)"
    )
    print("| step | wall s | CPU s |\n|---|---|---|")
    source = "released file" if args.checkpoint else "stand-in"
    print(f"| import-official ({source}), command | {t_import[0]:.1f} | {t_import[1]:.1f} |")
    print(
        f"| nnUNetv2_predict, one 512x512 slice, no TTA, command | {t_predict[0]:.1f} | {t_predict[1]:.1f} |"
    )
    print(f"| network forward, median (benchmarks/network.py, same run) | {forward:.1f} | |")
    print(f"| benchmarks/network.py, whole command (4 forwards, 2 without scans) | | {network_cpu:.1f} |")
    print(f"| predictor overhead (predict wall - forward) | {t_predict[0] - forward:.1f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
