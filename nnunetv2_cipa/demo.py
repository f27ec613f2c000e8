"""``nnunetv2_cipa demo``: synthetic PET/CT -> plan -> train small CIPA -> validate -> predict -> evaluate.

Every nnU-Net step is nnU-Net's own command run as a subprocess (so its progress output is what users
will see on their own data): ``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train ... -tr`` the demo's
trainer (validation runs at the end of training) and ``nnUNetv2_predict``; the held-out cases are then
scored by ``nnunetv2_cipa evaluate``, which writes the table, an overlay per case and a contact sheet.
The demo ends with the exact predict and evaluate commands for its model.

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
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_cipa.nnunet_commands import predict_command, shell_line
from nnunetv2_cipa.synthetic import PhantomSpec, write_synthetic_dataset
from nnunetv2_cipa.trainers.short_schedules import schedule_trainer_name

# The demo's trainer, trained with the schedule its name gives (--epochs, --iterations).
TRAINER = "nnUNetTrainerCIPA_small_demo"


NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
MAX_FOLDS = 5  # the synthetic dataset's split has min(5, patients) folds
WHY_DICE_DIFFERS = (
    "held-out Dice can differ from the validation fold's: other patients, whole volumes scored per "
    "patient vs nnU-Net's per-case mean, and test-time mirroring only when --tta is given"
)


class DemoInputError(ValueError):
    """A demo option that cannot work; found before anything runs."""


@dataclass(frozen=True)
class DemoPaths:
    nnunet: dict[str, Path]  # nnUNet_raw / _preprocessed / _results
    trainer: str  # TRAINER with the demo's schedule, e.g. nnUNetTrainerCIPA_small_demo_12epochs_20iters
    raw: Path
    preprocessed: Path
    results: Path  # <trainer>__nnUNetPlans__2d
    fold: Path
    predictions: Path
    evaluation: Path


# ------------------------------------------------------------------------------------------ input
def build_parser(prog: str) -> argparse.ArgumentParser:
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
    parser.add_argument("--fold", default="0", help="fold to train, 0..4 (default 0)")
    parser.add_argument("--patients", type=int, default=12, help="synthetic training patients (default 12)")
    parser.add_argument("--test-patients", type=int, default=3, help="held-out patients (default 3)")
    parser.add_argument("--size", type=int, default=64, help="in-plane matrix of the phantoms (default 64)")
    parser.add_argument("--slices", type=int, default=8, help="slices per patient (default 8)")
    parser.add_argument("--tta", action="store_true", help="mirroring test-time augmentation at prediction")
    parser.add_argument("--fresh", action="store_true", help="delete and rebuild this dataset's outputs")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Every option that would fail minutes later (in nnU-Net) is refused now."""
    minimum = {"epochs": 1, "iterations": 1, "patients": 2, "test_patients": 1, "size": 32, "slices": 1}
    for name, lowest in minimum.items():
        if getattr(args, name) < lowest:
            why = " (the demo predicts and evaluates held-out patients)" if name == "test_patients" else ""
            option = "--" + name.replace("_", "-")
            raise DemoInputError(f"{option}: must be >= {lowest}, got {getattr(args, name)}{why}")
    try:
        PhantomSpec(size=args.size, slices=args.slices)
    except ValueError as error:
        raise DemoInputError(f"--size/--slices: {error}") from None
    if not 1 <= args.dataset_id <= 999:
        raise DemoInputError(f"--dataset-id: must be in 1..999, got {args.dataset_id}")
    folds = min(MAX_FOLDS, args.patients)
    if not (args.fold.isdigit() and int(args.fold) < folds):
        raise DemoInputError(
            f"--fold: must be one of 0..{folds - 1} for {args.patients} patients, got {args.fold!r}"
        )
    if args.device != "cpu":
        import torch

        backend = torch.cuda if args.device == "cuda" else torch.backends.mps
        available = backend.is_available()
        if not available:
            raise DemoInputError(f"--device {args.device}: not available on this machine; use --device cpu")


# ------------------------------------------------------------------------------------------ steps
def nnunet_folders(output: str | None) -> dict[str, Path]:
    if output is None and all(os.environ.get(v) for v in NNUNET_VARS):
        return {v: Path(os.environ[v]) for v in NNUNET_VARS}
    base = Path(output or "nnunet_data").resolve()
    return {v: base / v for v in NNUNET_VARS}


def demo_environment(folders: dict[str, Path], args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    for var, path in folders.items():
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    env.setdefault("nnUNet_n_proc_DA", "1")
    return env


def run_step(cmd: list[str], env: dict) -> None:
    print(f"\n$ {shell_line(cmd)}", flush=True)
    exe = shutil.which(cmd[0], path=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    if exe is None:
        raise RuntimeError(f"{cmd[0]} not found: is nnunetv2 installed in this environment?")
    code = subprocess.call([exe, *cmd[1:]], env=env)
    if code != 0:
        raise RuntimeError(f"`{shell_line(cmd)}` failed with exit code {code}")


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def make_dataset(args: argparse.Namespace, folders: dict[str, Path]) -> DemoPaths:
    """Write (or reuse) the synthetic dataset; drop outputs that belonged to another dataset."""
    try:
        raw, reused = write_synthetic_dataset(
            folders["nnUNet_raw"],
            args.dataset_id,
            n_train=args.patients,
            n_test=args.test_patients,
            spec=PhantomSpec(size=args.size, slices=args.slices),
            overwrite=args.fresh,
        )
    except FileExistsError as error:
        # other demo options, or a dataset written by an older generator version
        stale = str(error).split(";")[0]
        raise FileExistsError(f"{stale}; rerun the demo with --fresh to rebuild it") from None
    say(f"dataset {'reused' if reused else 'written'}: {raw}")
    trainer = schedule_trainer_name(TRAINER, args.epochs, args.iterations)
    results = folders["nnUNet_results"] / raw.name / f"{trainer}__nnUNetPlans__2d"
    paths = DemoPaths(
        nnunet=folders,
        trainer=trainer,
        raw=raw,
        preprocessed=folders["nnUNet_preprocessed"] / raw.name,
        results=results,
        fold=results / f"fold_{args.fold}",
        predictions=results / f"demo_predictions_fold_{args.fold}",
        evaluation=results / f"demo_evaluation_fold_{args.fold}",
    )
    if args.fresh or not reused:
        shutil.rmtree(paths.preprocessed, ignore_errors=True)
        shutil.rmtree(paths.results, ignore_errors=True)
    return paths


def plans_current(raw: Path, pre: Path) -> bool:
    pre_json, plans = pre / "dataset.json", pre / "nnUNetPlans.json"
    if not (pre_json.is_file() and plans.is_file() and (pre / "nnUNetPlans_2d").is_dir()):
        return False
    return json.loads(pre_json.read_text()) == json.loads((raw / "dataset.json").read_text())


def plan_and_preprocess(args: argparse.Namespace, paths: DemoPaths, env: dict) -> None:
    if plans_current(paths.raw, paths.preprocessed):
        say(f"preprocessed data reused: {paths.preprocessed}")
        return
    shutil.rmtree(paths.preprocessed, ignore_errors=True)
    command = ["nnUNetv2_plan_and_preprocess", "-d", str(args.dataset_id), "-c", "2d"]
    command += ["-np", "2", "-npfp", "2"]
    run_step(command, {**env, "nnUNet_n_proc_DA": str(max(1, int(env["nnUNet_n_proc_DA"])))})


def train(args: argparse.Namespace, paths: DemoPaths, env: dict) -> None:
    """Train the fold (validation included), continue an interrupted run, or reuse a finished one."""
    settings = {"epochs": args.epochs, "iterations": args.iterations, "device": args.device}
    stamp = paths.fold / "demo_settings.json"
    same_settings = stamp.is_file() and json.loads(stamp.read_text()) == settings
    command = ["nnUNetv2_train", str(args.dataset_id), "2d", args.fold, "-tr", paths.trainer]
    command += ["-device", args.device, "--npz"]
    if same_settings and (paths.fold / "checkpoint_final.pth").is_file():
        say(f"trained model reused: {paths.fold}")
        return
    say(
        f"training {args.epochs} epochs x {args.iterations} iterations; then nnU-Net validates fold "
        f"{args.fold} (one 'predicting <case>' line per case)"
    )
    if same_settings and (paths.fold / "checkpoint_latest.pth").is_file():
        run_step(command + ["--c"], env)
        return
    shutil.rmtree(paths.fold, ignore_errors=True)
    paths.fold.mkdir(parents=True)
    stamp.write_text(json.dumps(settings))
    run_step(command, env)


def predict_held_out(args: argparse.Namespace, paths: DemoPaths, env: dict) -> list[str]:
    """Predict imagesTs with the trained fold; returns the command (the demo prints it at the end)."""
    shutil.rmtree(paths.predictions, ignore_errors=True)
    command = predict_command(
        paths.raw / "imagesTs", paths.predictions, args.dataset_id, paths.trainer, (args.fold,),
        device=args.device, tta=args.tta,
    )  # fmt: skip
    say(f"predicting {args.test_patients} held-out patient(s) (nnU-Net prints one line per case)")
    run_step(command, env)
    return command


def evaluation_command(paths: DemoPaths) -> list[str]:
    return [
        "nnunetv2_cipa", "evaluate", "--pred", str(paths.predictions), "--gt", str(paths.raw / "labelsTs"),
        "--images", str(paths.raw / "imagesTs"), "--out", str(paths.evaluation), "--names", "CIPA small",
    ]  # fmt: skip


def evaluate_held_out(paths: DemoPaths) -> dict:
    """Score the predictions with ``nnunetv2_cipa evaluate`` (table, overlays, contact sheet)."""
    from nnunetv2_cipa.evaluation.cli import main as evaluate_main

    command = evaluation_command(paths)
    print(f"\n$ {shell_line(command)}", flush=True)
    code = evaluate_main(command[2:], prog="nnunetv2_cipa evaluate")
    if code != 0:
        raise RuntimeError(f"`{shell_line(command)}` failed with exit code {code}")
    return json.loads((paths.evaluation / "metrics.json").read_text())["models"][0]


def report(
    args: argparse.Namespace, paths: DemoPaths, model: dict, predict: list[str], seconds: float
) -> None:
    print("\n[demo] held-out cases (Dice of the lesion label):")
    for row in model["per_case"]:
        dice = row["dice"]
        note = " (no lesion in reference or prediction)" if dice is None else ""
        print(f"  {row['case']}: Dice {'nan' if dice is None else f'{dice:.3f}'}{note}")
    scored = [row["dice"] for row in model["per_case"] if row["dice"] is not None]
    if scored:
        print(f"  mean over {len(scored)} case(s) with lesions: {sum(scored) / len(scored):.3f}")
    validation = paths.fold / "validation" / "summary.json"
    if validation.is_file():
        say(
            f"cross-validation fold {args.fold}: foreground Dice "
            f"{json.loads(validation.read_text())['foreground_mean']['Dice']:.3f}  ({validation})"
        )
    say(WHY_DICE_DIFFERS)
    print_pet_totals(paths)
    if model.get("contact_sheet"):
        say(f"overlays:    {Path(model['contact_sheet']).parent}  (contact sheet: {model['contact_sheet']})")
    say(f"model:       {paths.results}\n[demo] predictions: {paths.predictions}")
    say("to go on with this model (nnUNet_raw/_preprocessed/_results set as above):")
    for var, folder in paths.nnunet.items():
        print(f"  export {var}={shell_line([str(folder)])}")
    print(f"  {shell_line(predict)}\n  {shell_line(evaluation_command(paths))}")
    say(f"took {seconds:.0f} s")


def print_pet_totals(paths: DemoPaths) -> None:
    """Held-out total MTV and TLG per patient, predicted beside the reference (``quantify``'s rules)."""
    from nnunetv2_cipa.evaluation.quantify_run import patient_totals

    try:
        rows = patient_totals(paths.predictions, paths.raw / "imagesTs", paths.raw / "labelsTs",
                              dataset_json=paths.raw / "dataset.json")  # fmt: skip
    except ValueError as error:  # quantify's refusals are one line; the demo's results stand without them
        say(f"PET totals not available: {error}")
        return
    print("\n[demo] held-out PET totals, prediction vs reference (nnunetv2_cipa quantify for per lesion):")
    for row in rows:
        pred, ref = row["pred"], row["ref"] or {}

        def tlg(side: dict) -> str:
            return "n/a" if side.get("tlg") is None else f"{side['tlg']:.1f}"

        print(
            f"  {row['patient']}: MTV {pred['mtv_ml']:.2f} vs {ref.get('mtv_ml', float('nan')):.2f} ml, "
            f"TLG {tlg(pred)} vs {tlg(ref)} ({row['pet_unit']}·ml)"
        )


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa demo") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        check_arguments(args)
    except DemoInputError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    start = time.time()
    try:
        folders = nnunet_folders(args.output)
        env = demo_environment(folders, args)
        paths = make_dataset(args, folders)
        plan_and_preprocess(args, paths, env)
        train(args, paths, env)
        predict = predict_held_out(args, paths, env)
        model = evaluate_held_out(paths)
    except (RuntimeError, ValueError, FileExistsError, OSError) as error:
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    report(args, paths, model, predict, time.time() - start)
    return 0
