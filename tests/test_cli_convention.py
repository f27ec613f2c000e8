"""One convention for every ``nnunetv2_cipa`` subcommand, checked over ``cli.COMMANDS``.

An error is one line on stderr, ``nnunetv2_cipa <command>: error: ...``, naming the file or argument;
exit status 2 for bad input and 1 for a failure during the work. The usage-error probe runs for every
registered subcommand, so a new one is checked as soon as it is registered.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from nnunetv2_cipa import cli

sys.path.insert(0, str(Path(__file__).parent / "evaluation"))
from test_eval_cli import make_slice_dataset  # noqa: E402

# command -> (arguments with a bad value, text the error line must contain)
BAD_INPUT = {
    "demo": (["--test-patients", "0"], "--test-patients"),
    "setup": (["--shim", "sometimes"], "--shim"),
    "fixed-window": (["-d", "abc"], "-d abc"),
    "params": (["--num-classes", "0"], "--num-classes"),
    "convert": (
        ["case", "--ct", "{tmp}/nope", "--pet", "{tmp}/nope", "--out", "{tmp}/out"],
        "{tmp}/nope: --ct: does not exist",
    ),
    "evaluate": (["--pred", "{tmp}/nope", "--gt", "{tmp}"], "--pred {tmp}/nope"),
    "crossval-report": (["{tmp}/nope"], "{tmp}/nope"),
    "quantify": (["--seg", "{tmp}/nope", "--images", "{tmp}", "--out", "{tmp}/q"], "--seg {tmp}/nope"),
    "import-official": (
        ["{tmp}/nope.pth", "--dataset-id", "990", "--results-dir", "{tmp}/results"],
        "{tmp}/nope.pth: no such file",
    ),
    "export-dicom": (
        ["--pred", "{tmp}/nope", "--images", "{tmp}", "--ct-dicom", "{tmp}", "--out", "{tmp}/e"],
        "{tmp}/nope",
    ),
}


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"{command}: more than one line on stderr:\n{err}"
    prefix = f"nnunetv2_cipa {command}"
    assert err.startswith(prefix) and ": error: " in err, err
    return err


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_an_unknown_option_is_one_line_and_exit_2(command, capsys):
    assert cli.main([command, "--no-such-option"]) == 2
    _error_line(capsys, command)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_bad_input_is_one_line_naming_the_argument_and_exit_2(command, tmp_path, capsys, monkeypatch):
    if command not in BAD_INPUT:
        pytest.skip(f"{command}: only options are checked (no bad-input example registered here)")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    argv, expected = BAD_INPUT[command]
    assert cli.main([command, *(a.format(tmp=tmp_path) for a in argv)]) == 2
    assert expected.format(tmp=tmp_path) in _error_line(capsys, command)


def test_every_bad_input_example_is_a_registered_command():
    assert set(BAD_INPUT) <= set(cli.COMMANDS)


def test_a_failure_while_writing_is_exit_1(tmp_path, capsys):
    ds = make_slice_dataset(tmp_path / "ds", n_patients=1, n_slices=1)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    argv = ["evaluate", "--pred", str(ds / "pred"), "--gt", str(ds / "labelsTs")]
    assert cli.main([*argv, "--out", str(blocker / "eval"), "-np", "1"]) == 1
    assert str(blocker) in _error_line(capsys, "evaluate")


def test_unknown_command_and_version(capsys):
    assert cli.main(["no-such-command"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnunetv2_cipa: error: unknown command 'no-such-command'") and "\n" not in err
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nnunetv2_cipa {importlib.metadata.version('nnunetv2_cipa')}"
