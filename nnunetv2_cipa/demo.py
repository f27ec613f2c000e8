"""``nnunetv2_cipa demo``: synthetic PET/CT -> plan -> train small CIPA -> validate -> predict -> Dice.

Every step is nnU-Net's own command run as a subprocess (so its progress output is what users will see
on their own data): ``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train ... -tr
nnUNetTrainerCIPA_small_<E>epochs_<I>iters`` (validation runs at the end of training) and
``nnUNetv2_predict``.

Idempotent: the dataset is reused when its generation parameters match, preprocessing when the
preprocessed ``dataset.json`` matches the raw one, a finished training when its schedule matches
(``demo_settings.json`` in the fold folder), an interrupted one is continued with ``--c``. ``--fresh``
replaces everything of this dataset. Outputs go to ``./nnunet_data`` (git-ignored) unless all three
``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` are set, or ``--output`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_cipa.synthetic import PhantomSpec, write_synthetic_dataset
from nnunetv2_cipa.trainers.short_schedules import schedule_trainer_name

TRAINER_BASE = "nnUNetTrainerCIPA_small"  # trained with the schedule its name gives (--epochs, --iterations)
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def _folders(output: str | None) -> dict[str, Path]:
    if output is None and all(os.environ.get(v) for v in NNUNET_VARS):
        return {v: Path(os.environ[v]) for v in NNUNET_VARS}
    base = Path(output or "nnunet_data").resolve()
    return {v: base / v for v in NNUNET_VARS}


def _run(cmd: list[str], env: dict) -> None:
    print(f"\n$ {' '.join(cmd)}", flush=True)
    exe = shutil.which(cmd[0], path=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    if exe is None:
        raise RuntimeError(f"{cmd[0]} not found: is nnunetv2 installed in this environment?")
    code = subprocess.call([exe, *cmd[1:]], env=env)
    if code != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {code}")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of the lesion (label > 0); NaN when both are empty."""
    p, r = pred > 0, ref > 0
    denominator = p.sum() + r.sum()
    return float("nan") if denominator == 0 else 2.0 * float((p & r).sum()) / float(denominator)


def _plans_current(raw: Path, pre: Path) -> bool:
    pre_json, plans = pre / "dataset.json", pre / "nnUNetPlans.json"
    if not (pre_json.is_file() and plans.is_file() and (pre / "nnUNetPlans_2d").is_dir()):
        return False
    return json.loads(pre_json.read_text()) == json.loads((raw / "dataset.json").read_text())


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa demo") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-id", type=int, default=980, help="nnU-Net dataset id (default 980)")
    parser.add_argument(
        "--output",
        help="folder for nnUNet_raw/_preprocessed/_results (default ./nnunet_data "
        "unless the nnUNet_* variables are set)",
    )
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (default 12)")
    parser.add_argument("--iterations", type=int, default=20, help="iterations per epoch (default 20)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"), help="default cpu")
    parser.add_argument("--fold", default="0", help="fold to train (default 0)")
    parser.add_argument("--patients", type=int, default=12, help="synthetic training patients (default 12)")
    parser.add_argument("--test-patients", type=int, default=3, help="held-out patients (default 3)")
    parser.add_argument("--size", type=int, default=64, help="in-plane matrix of the phantoms (default 64)")
    parser.add_argument("--slices", type=int, default=8, help="slices per patient (default 8)")
    parser.add_argument("--tta", action="store_true", help="mirroring test-time augmentation at prediction")
    parser.add_argument("--fresh", action="store_true", help="delete and rebuild this dataset's outputs")
    args = parser.parse_args(argv)
    for name in ("epochs", "iterations", "patients", "size", "slices"):
        if getattr(args, name) < 1:
            print(f"{prog}: --{name} must be positive", file=sys.stderr)
            return 2
    folders = _folders(args.output)
    env = dict(os.environ)
    for var, path in folders.items():
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    env.setdefault("nnUNet_n_proc_DA", "1")
    trainer = schedule_trainer_name(TRAINER_BASE, args.epochs, args.iterations)
    start = time.time()
    try:
        spec = PhantomSpec(size=args.size, slices=args.slices)
        raw, reused = write_synthetic_dataset(
            folders["nnUNet_raw"],
            args.dataset_id,
            n_train=args.patients,
            n_test=args.test_patients,
            spec=spec,
            overwrite=args.fresh,
        )
        print(f"[demo] dataset {'reused' if reused else 'written'}: {raw}", flush=True)
        pre = folders["nnUNet_preprocessed"] / raw.name
        results = folders["nnUNet_results"] / raw.name / f"{trainer}__nnUNetPlans__2d"
        if args.fresh or not reused:
            shutil.rmtree(pre, ignore_errors=True)
            shutil.rmtree(results, ignore_errors=True)
        if _plans_current(raw, pre):
            print(f"[demo] preprocessed data reused: {pre}", flush=True)
        else:
            shutil.rmtree(pre, ignore_errors=True)
            _run(
                [
                    "nnUNetv2_plan_and_preprocess",
                    "-d",
                    str(args.dataset_id),
                    "-c",
                    "2d",
                    "-np",
                    "2",
                    "-npfp",
                    "2",
                ],
                {**env, "nnUNet_n_proc_DA": str(max(1, int(env["nnUNet_n_proc_DA"])))},
            )
        fold_dir = results / f"fold_{args.fold}"
        settings = {"epochs": args.epochs, "iterations": args.iterations, "device": args.device}
        stamp = fold_dir / "demo_settings.json"
        done = (
            (fold_dir / "checkpoint_final.pth").is_file()
            and stamp.is_file()
            and json.loads(stamp.read_text()) == settings
        )
        train = [
            "nnUNetv2_train",
            str(args.dataset_id),
            "2d",
            args.fold,
            "-tr",
            trainer,
            "-device",
            args.device,
            "--npz",
        ]
        if done:
            print(f"[demo] trained model reused: {fold_dir}", flush=True)
        elif (
            stamp.is_file()
            and json.loads(stamp.read_text()) == settings
            and (fold_dir / "checkpoint_latest.pth").is_file()
        ):
            _run(train + ["--c"], env)
        else:
            shutil.rmtree(fold_dir, ignore_errors=True)
            fold_dir.mkdir(parents=True)
            stamp.write_text(json.dumps(settings))
            _run(train, env)
        predictions = results / f"demo_predictions_fold_{args.fold}"
        shutil.rmtree(predictions, ignore_errors=True)
        _run(
            [
                "nnUNetv2_predict",
                "-i",
                str(raw / "imagesTs"),
                "-o",
                str(predictions),
                "-d",
                str(args.dataset_id),
                "-c",
                "2d",
                "-tr",
                trainer,
                "-f",
                args.fold,
                "-device",
                args.device,
                "-npp",
                "1",
                "-nps",
                "1",
            ]
            + ([] if args.tta else ["--disable_tta"]),
            env,
        )
    except (RuntimeError, ValueError, FileExistsError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    print("\n[demo] held-out cases (Dice of the lesion label):")
    scores = []
    for ref_path in sorted((raw / "labelsTs").glob("*.nii.gz")):
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(ref_path)))
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / ref_path.name)))
        value = dice(pred, ref)
        scores.append(value)
        note = " (no lesion in reference or prediction)" if np.isnan(value) else ""
        print(f"  {ref_path.name[:-7]}: Dice {value:.3f}{note}")
    valid = [s for s in scores if not np.isnan(s)]
    if valid:
        print(f"  mean over {len(valid)} case(s) with lesions: {np.mean(valid):.3f}")
    validation = fold_dir / "validation" / "summary.json"
    if validation.is_file():
        print(
            f"[demo] cross-validation fold {args.fold}: foreground Dice "
            f"{json.loads(validation.read_text())['foreground_mean']['Dice']:.3f}  ({validation})"
        )
    print(f"[demo] model:       {results}\n[demo] predictions: {predictions}")
    print(f"[demo] took {time.time() - start:.0f} s")
    return 0
