"""Does the small CIPA learn? Held-out Dice and wall time on the synthetic PET/CT data, CPU, vs nnU-Net.

Trains ``nnUNetTrainerCIPA_small_<E>epochs_<I>iters`` and the stock ``nnUNetTrainer`` (2d, its planned
PlainConvUNet, SGD/poly) with the same epochs x iterations, each with the stock ``nnUNetv2_train``
(fold 0 of the synthetic dataset's patient-grouped split), then predicts the held-out patients with
``nnUNetv2_predict`` and reports the Dice over all held-out voxels (pooled, like the paper) and the
training wall time.

The stock trainer is trained in-process through nnU-Net's Python API with the same schedule, because
``-tr nnUNetTrainer_Xepochs`` lives in nnU-Net's ``variants/`` folder, which the trainer lookup cannot
reach on CPU machines whose torchvision is broken (see docs/trainers.md).

    .venv/bin/python benchmarks/learning.py [--epochs 12 --iterations 20] [--work DIR] [--skip-baseline]

Timings on a shared machine are noisy: the script prints the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

from nnunetv2_cipa.synthetic import PhantomSpec, write_synthetic_dataset
from nnunetv2_cipa.trainers.short_schedules import VALIDATION_ITERATIONS, schedule_trainer_name

DATASET_ID = 981
BIN = Path(sys.executable).parent


def _run(cmd: list[str], env: dict) -> float:
    start = time.time()
    code = subprocess.call([str(BIN / cmd[0]), *cmd[1:]], env=env, stdout=subprocess.DEVNULL)
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {code}")
    return time.time() - start


def _train_baseline(env: dict, epochs: int, iterations: int) -> float:
    """The stock nnUNetTrainer with the same schedule, in a subprocess via nnU-Net's Python API."""
    code = (
        "import torch\n"
        "from nnunetv2.run.run_training import get_trainer_from_args\n"
        f"t = get_trainer_from_args('{DATASET_ID}', '2d', 0, 'nnUNetTrainer', 'nnUNetPlans',\n"
        "                          device=torch.device('cpu'))\n"
        f"t.num_epochs = {epochs}; t.num_iterations_per_epoch = {iterations}\n"
        f"t.num_val_iterations_per_epoch = {VALIDATION_ITERATIONS}\n"
        "t.run_training(); t.perform_actual_validation(False)\n"
    )
    start = time.time()
    code_ = subprocess.call([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    if code_:
        raise SystemExit(f"baseline training failed with exit code {code_}")
    return time.time() - start


def pooled_dice(pred_dir: Path, ref_dir: Path) -> float:
    tp = fp = fn = 0
    for ref_path in sorted(ref_dir.glob("*.nii.gz")):
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(ref_path))) > 0
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / ref_path.name))) > 0
        tp += int((pred & ref).sum())
        fp += int((pred & ~ref).sum())
        fn += int((~pred & ref).sum())
    return 2 * tp / max(1, 2 * tp + fp + fn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--work", help="working folder (default: a new temporary folder)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="cipa_learning_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (work / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(work / name)
    env.update(
        {
            "nnUNet_compile": "false",
            "nnUNet_n_proc_DA": "1",
        }
    )
    print(f"load average before: {os.getloadavg()}  (2-core machine; shared => timings noisy)")
    raw, _ = write_synthetic_dataset(
        work / "nnUNet_raw", DATASET_ID, n_train=12, n_test=3, spec=PhantomSpec(size=128, slices=8), seed=0
    )
    if not (work / "nnUNet_preprocessed" / raw.name / "nnUNetPlans.json").is_file():
        _run(
            ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "2", "-npfp", "2"], env
        )
    rows = []
    cipa_trainer = schedule_trainer_name("nnUNetTrainerCIPA_small", args.epochs, args.iterations)
    runs = [(cipa_trainer, None)] + ([] if args.skip_baseline else [("nnUNetTrainer", _train_baseline)])
    for trainer, custom in runs:
        if custom is None:
            seconds = _run(
                ["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", trainer, "-device", "cpu"], env
            )
        else:
            seconds = custom(env, args.epochs, args.iterations)
        out = work / f"pred_{trainer}"
        _run(
            [
                "nnUNetv2_predict",
                "-i",
                str(raw / "imagesTs"),
                "-o",
                str(out),
                "-d",
                str(DATASET_ID),
                "-c",
                "2d",
                "-tr",
                trainer,
                "-f",
                "0",
                "-device",
                "cpu",
                "--disable_tta",
                "-npp",
                "1",
                "-nps",
                "1",
            ],
            env,
        )
        rows.append(
            {
                "trainer": trainer,
                "held_out_dice": round(pooled_dice(out, raw / "labelsTs"), 4),
                "train_wall_s": round(seconds, 1),
                "epochs": args.epochs,
                "iterations": args.iterations,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(f"load average after: {os.getloadavg()}")
    (work / "learning_results.json").write_text(json.dumps(rows, indent=2))
    print(f"results: {work / 'learning_results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
