"""The ``nnunetv2_cipa`` command: a thin dispatcher to subcommand modules.

Each subcommand lives in its own module exposing ``main(argv: list[str] | None, prog: str) -> int``;
it is imported only when asked for, so ``nnunetv2_cipa convert`` never imports torch and
``nnunetv2_cipa --help`` is instant.

One convention for every subcommand (tests/test_cli_convention.py checks it over ``COMMANDS``): an
error is one line on stderr, ``nnunetv2_cipa <command>: error: <file or argument>: <problem>``; the exit
status is 2 for bad input (arguments, missing or damaged files) and 1 for a failure during the work.
argparse's own usage errors are turned into that one line here, for every subcommand at once, so a
new subcommand follows the convention for its options without doing anything.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Iterator

from nnunetv2_cipa import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("nnunetv2_cipa.demo", "synthetic PET/CT -> plan -> train small CIPA -> validate -> predict"),
    "setup": ("nnunetv2_cipa.trainers.discovery", "make nnU-Net find nnUNetTrainerCIPA (run once per env)"),
    "fixed-window": ("nnunetv2_cipa.commands.fixed_window", "paper's fixed CT/PET windows -> plans"),
    "params": ("nnunetv2_cipa.commands.params", "count parameters (and GFLOPs) of a CIPA preset"),
    "convert": ("nnunetv2_cipa.dataset_conversion.cli", "PCLT20K / TCIA STS / new cases -> nnU-Net raw"),
    "export-dicom": ("nnunetv2_cipa.dicom_export.command", "predictions -> DICOM RTSTRUCT / SEG on the CT"),
    "evaluate": ("nnunetv2_cipa.evaluation.cli", "paper + nnU-Net + lesion metrics, tables, overlays"),
    "import-official": ("nnunetv2_cipa.commands.official_import", "released CIPA.pth -> nnU-Net model"),
    "crossval-report": ("nnunetv2_cipa.evaluation.crossval", "five-fold validation -> metrics table"),
    "quantify": ("nnunetv2_cipa.evaluation.quantify", "lesion SUVmax/SUVpeak/MTV/TLG, FPV/FNV, agreement"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"usage: nnunetv2_cipa <command> [options]   (version {__version__})", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `nnunetv2_cipa <command> --help` for the options of one command."]
    return "\n".join(lines)


@contextlib.contextmanager
def one_line_usage_errors() -> Iterator[None]:
    """While a subcommand runs, argparse reports a bad option as one line (no usage block) and exits 2.

    argparse prints the whole usage before its error line; users of a pipeline then see several lines
    for one mistake. The usage stays one ``--help`` away, and the line says so.
    """

    def error(parser: argparse.ArgumentParser, message: str):
        parser.exit(2, f"{parser.prog}: error: {' '.join(message.split())} (see --help)\n")

    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"nnunetv2_cipa {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"nnunetv2_cipa: error: unknown command {name!r} (commands: {', '.join(COMMANDS)})",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    with one_line_usage_errors():
        try:
            return int(module.main(rest, prog=f"nnunetv2_cipa {name}") or 0)
        except SystemExit as done:  # argparse's exits (--help, a usage error) end the command, not us
            return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
