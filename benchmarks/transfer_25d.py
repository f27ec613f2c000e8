"""Transfer learning and 2.5D on the synthetic target cohort: four arms, one run, the same budget each.

Setting (Luo et al., arXiv 2509.22841, reproduced on phantoms, see ``nnunetv2_cipa.synthetic.cohorts``):
a *source* cohort (uniform lesion uptake, many patients) and a small *target* cohort whose lesions'
PET uptake fades in their cranial and caudal slices while the label keeps the full extent. Arms, all
with the small preset on CPU, fold 0 of the target's patient-grouped split, the same epochs x
iterations (and so the same number of updates) per arm:

* (a) ``nnUNetTrainerCIPA_small`` on the 2D target, from scratch;
* (b) ``nnUNetTrainerCIPA_SIM_small`` on the 2.5D (K = 1) copy of the target, from scratch;
* (c) ``nnUNetTrainerCIPA_small_finetune`` on the 2D target, from the 2D source checkpoint;
* (d) ``nnUNetTrainerCIPA_SIM_small_finetune`` on the 2.5D target, from the same 2D checkpoint.

The source checkpoint comes from one pre-training run (``nnUNetTrainerCIPA_small``, fold ``all`` of the
source) shared by (c) and (d); its cost is reported separately. Reported per arm: Dice pooled over the
held-out target patients (``imagesTs``, never used for any choice) over all slices and over the
peripheral slices only (slices where some lesion's PET contrast is under half its peak, as the generator
records them), and the same two on the fold-0 validation patients: choices (schedule, learning rates)
may only be made on the validation columns. Trainers run through nnU-Net's own Python entry points
(``get_trainer_from_args``, ``maybe_load_checkpoint`` -- the code path of ``nnUNetv2_train
-pretrained_weights`` -- and ``run_training``), in one subprocess each, so the schedule is set without
extra trainer classes; prediction uses ``nnUNetv2_predict``.

    .venv/bin/python benchmarks/transfer_25d.py [--epochs 5 --iterations 15 --pretrain-epochs 8]
                                                [--work DIR] [--seed 0]

One run, one seed: differences of a few Dice points are within run-to-run noise. Wall times on a
shared machine are indicative only (the load average is printed).
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

import numpy as np
import SimpleITK as sitk

from nnunetv2_cipa.synthetic import PhantomSpec, cohort_spec, write_synthetic_dataset

SOURCE_ID, TARGET_2D_ID, TARGET_25D_ID = 971, 972, 973
BIN = Path(sys.executable).parent
PRETRAIN_TRAINER = "nnUNetTrainerCIPA_small"
ARMS = {
    "a": ("2D from scratch", TARGET_2D_ID, "nnUNetTrainerCIPA_small", False),
    "b": ("2.5D SIM from scratch", TARGET_25D_ID, "nnUNetTrainerCIPA_SIM_small", False),
    "c": ("2D pre-trained + fine-tuned", TARGET_2D_ID, "nnUNetTrainerCIPA_small_finetune", True),
    "d": ("2.5D SIM pre-trained + fine-tuned", TARGET_25D_ID, "nnUNetTrainerCIPA_SIM_small_finetune", True),
}

_TRAIN = """
import sys, torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
dataset, fold, trainer_name, epochs, iterations, pretrained = sys.argv[1:7]
trainer = get_trainer_from_args(dataset, '2d', fold if fold == 'all' else int(fold), trainer_name,
                                'nnUNetPlans', device=torch.device('cpu'))
trainer.num_epochs, trainer.num_iterations_per_epoch = int(epochs), int(iterations)
trainer.num_val_iterations_per_epoch = 4
maybe_load_checkpoint(trainer, False, False, pretrained or None)
trainer.run_training()
if fold != 'all':
    trainer.perform_actual_validation(False)
"""


def _run(cmd: list[str], env: dict) -> float:
    start = time.time()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"transfer_25d.py: error: {' '.join(cmd[:4])} ... failed:\n" + "\n".join(tail))
    return time.time() - start


def _train(env: dict, dataset: int, fold: str, trainer: str, epochs: int, iterations: int,
           pretrained: Path | None = None) -> float:
    args = [str(dataset), fold, trainer, str(epochs), str(iterations), str(pretrained or "")]
    return _run([sys.executable, "-c", _TRAIN, *args], env)


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0


def pooled_dice(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Dice over all voxels of all (prediction, reference) pairs; NaN when both are empty everywhere."""
    tp = fp = fn = 0
    for pred, ref in pairs:
        tp += int((pred & ref).sum())
        fp += int((pred & ~ref).sum())
        fn += int((~pred & ref).sum())
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")


def score(pred_dir: Path, ref_dir: Path, cases: list[str], peripheral: dict[str, list[int]]) -> dict:
    """Pooled Dice over all slices and over each case's peripheral slices only."""
    everything, outer = [], []
    for case in cases:
        pred, ref = _read(pred_dir / f"{case}.nii.gz"), _read(ref_dir / f"{case}.nii.gz")
        everything.append((pred, ref))
        slices = peripheral.get(case, [])
        if slices:
            outer.append((pred[slices], ref[slices]))
    return {"dice_all": pooled_dice(everything), "dice_peripheral": pooled_dice(outer),
            "peripheral_slices": sum(len(peripheral.get(c, [])) for c in cases)}


def _predict(env: dict, source: Path, out: Path, dataset: int, trainer: str) -> None:
    _run([str(BIN / "nnUNetv2_predict"), "-i", str(source), "-o", str(out), "-d", str(dataset), "-c", "2d",
          "-tr", trainer, "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per arm")
    parser.add_argument("--iterations", type=int, default=15, help="iterations per epoch (every run)")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--source-patients", type=int, default=16)
    parser.add_argument("--target-patients", type=int, default=8, help="training patients of the target")
    parser.add_argument("--test-patients", type=int, default=8, help="held-out target patients")
    parser.add_argument("--size", type=int, default=64, help="in-plane matrix of the phantoms")
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every subprocess")
    parser.add_argument("--work", help="working folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="cipa_transfer25d_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (work / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(work / name)
    # one torch thread per process: on a loaded 2-core machine torch's default threads oversubscribe the
    # cores and a training step becomes an order of magnitude slower
    env.update({"nnUNet_compile": "false", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1",
                "OMP_NUM_THREADS": str(args.threads)})
    print(f"load average before: {os.getloadavg()}  (shared machine: wall times are indicative)", flush=True)
    started = time.time()

    base = PhantomSpec(size=args.size, slices=args.slices)
    raw = work / "nnUNet_raw"
    source, _ = write_synthetic_dataset(raw, SOURCE_ID, name="SynSource", n_train=args.source_patients,
                                        n_test=0, spec=cohort_spec("source", base), seed=1000 + args.seed)
    target = {}
    for dataset_id, k in ((TARGET_2D_ID, 0), (TARGET_25D_ID, 1)):
        target[dataset_id], _ = write_synthetic_dataset(
            raw, dataset_id, name=f"SynTarget{'25D' if k else '2D'}", n_train=args.target_patients,
            n_test=args.test_patients, spec=cohort_spec("target", base), seed=2000 + args.seed,
            context_slices=k,
        )
    for dataset_id in (SOURCE_ID, TARGET_2D_ID, TARGET_25D_ID):
        name = (source if dataset_id == SOURCE_ID else target[dataset_id]).name
        if not (work / "nnUNet_preprocessed" / name / "nnUNetPlans.json").is_file():
            _run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "2d", "-np", "1",
                  "-npfp", "1"], {**env, "nnUNet_n_proc_DA": "1"})

    checkpoint = (work / "nnUNet_results" / source.name / f"{PRETRAIN_TRAINER}__nnUNetPlans__2d" / "fold_all"
                  / "checkpoint_final.pth")
    pretrain_s = 0.0
    if not checkpoint.is_file():
        pretrain_s = _train(env, SOURCE_ID, "all", PRETRAIN_TRAINER, args.pretrain_epochs, args.iterations)
    print(json.dumps({"pretraining": PRETRAIN_TRAINER, "epochs": args.pretrain_epochs,
                      "iterations": args.iterations, "wall_s": round(pretrain_s, 1)}), flush=True)

    meta = json.loads((target[TARGET_2D_ID] / "dataset.json").read_text())
    peripheral = meta["cipa_synthetic_peripheral_slices"]
    labels_ts = target[TARGET_2D_ID] / "labelsTs"
    test_cases = sorted(p.name[: -len(".nii.gz")] for p in labels_ts.glob("*.nii.gz"))
    splits = json.loads((target[TARGET_2D_ID] / "splits_final.json").read_text())
    val_cases = sorted(splits[0]["val"])
    rows = []
    for arm, (title, dataset_id, trainer, pretrained) in ARMS.items():
        results = work / "nnUNet_results" / target[dataset_id].name / f"{trainer}__nnUNetPlans__2d"
        seconds = 0.0
        if not (results / "fold_0" / "checkpoint_final.pth").is_file():
            seconds = _train(env, dataset_id, "0", trainer, args.epochs, args.iterations,
                             checkpoint if pretrained else None)
        out = work / f"pred_{arm}"
        if not out.is_dir():
            _predict(env, target[dataset_id] / "imagesTs", out, dataset_id, trainer)
        held_out = score(out, target[dataset_id] / "labelsTs", test_cases, peripheral)
        validation = score(results / "fold_0" / "validation", target[dataset_id] / "labelsTr", val_cases,
                           peripheral)
        rows.append({"arm": arm, "what": title, "trainer": trainer, "epochs": args.epochs,
                     "iterations": args.iterations, "train_wall_s": round(seconds, 1),
                     **{f"held_out_{k}": v for k, v in held_out.items()},
                     **{f"validation_{k}": v for k, v in validation.items()}})
        print(json.dumps(rows[-1]), flush=True)

    print(f"\nload average after: {os.getloadavg()}; total wall {time.time() - started:.0f} s")
    print("| arm | held-out Dice, all slices | held-out Dice, peripheral slices | fold-0 validation Dice "
          "(all / peripheral) | train wall s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| ({r['arm']}) {r['what']} | {r['held_out_dice_all']:.3f} | "
              f"{r['held_out_dice_peripheral']:.3f} | {r['validation_dice_all']:.3f} / "
              f"{r['validation_dice_peripheral']:.3f} | {r['train_wall_s']} |")
    print(f"held-out: {len(test_cases)} patients, {rows[0]['held_out_peripheral_slices']} peripheral slices; "
          f"validation: {len(val_cases)} patients")
    (work / "transfer_25d_results.json").write_text(json.dumps(rows, indent=2))
    print(f"results: {work / 'transfer_25d_results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
