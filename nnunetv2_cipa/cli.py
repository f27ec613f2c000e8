"""The ``nnunetv2_cipa`` command: a thin dispatcher to subcommand modules.

Each subcommand lives in its own module exposing ``main(argv: list[str] | None, prog: str) -> int``;
it is imported only when asked for, so ``nnunetv2_cipa convert`` never imports torch and
``nnunetv2_cipa --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("nnunetv2_cipa.demo", "synthetic PET/CT -> plan -> train small CIPA -> validate -> predict"),
    "setup": ("nnunetv2_cipa.trainers.discovery", "make nnU-Net find nnUNetTrainerCIPA (run once per env)"),
    "fixed-window": ("nnunetv2_cipa.commands.fixed_window", "paper's fixed CT/PET windows -> plans"),
    "params": ("nnunetv2_cipa.commands.params", "count parameters (and GFLOPs) of a CIPA preset"),
    "convert": ("nnunetv2_cipa.dataset_conversion.cli", "PCLT20K / TCIA STS / new cases -> nnU-Net raw"),
    "export-dicom": ("nnunetv2_cipa.dicom_export.command", "predictions -> DICOM RTSTRUCT / SEG on the CT"),
    "evaluate": ("nnunetv2_cipa.evaluation.cli", "paper + nnU-Net + lesion metrics, tables, overlays"),
    "crossval-report": ("nnunetv2_cipa.evaluation.crossval", "five-fold validation -> metrics table"),
    "quantify": ("nnunetv2_cipa.evaluation.quantify", "lesion SUVmax/SUVpeak/MTV/TLG, FPV/FNV, agreement"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: nnunetv2_cipa <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `nnunetv2_cipa <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"nnunetv2_cipa: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest, prog=f"nnunetv2_cipa {name}") or 0)


if __name__ == "__main__":
    sys.exit(main())
