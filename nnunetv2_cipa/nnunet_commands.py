"""nnU-Net's command lines as this project runs them, built in one place.

The demo, the learning benchmark and the chain test all predict a single trained fold on a CPU; the
flags that makes work (``-f`` for the one fold instead of five, ``-device cpu`` instead of nnU-Net's
default CUDA, one worker each for preprocessing and export) are easy to forget, and the demo prints the
same line for users to copy. Pure string assembly: no nnU-Net import, no subprocess.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path


def predict_command(
    images: Path,
    output: Path,
    dataset_id: int | str,
    trainer: str,
    folds: Sequence[int | str] = (0,),
    *,
    configuration: str = "2d",
    device: str = "cpu",
    tta: bool = False,
    processes: int = 1,
    save_probabilities: bool = False,
) -> list[str]:
    """``nnUNetv2_predict`` for ``folds`` of ``trainer`` on ``images`` (without TTA unless asked)."""
    command = [
        "nnUNetv2_predict",
        "-i", str(images),
        "-o", str(output),
        "-d", str(dataset_id),
        "-c", configuration,
        "-tr", trainer,
        "-f", *(str(f) for f in folds),
        "-device", device,
        "-npp", str(processes),
        "-nps", str(processes),
    ]  # fmt: skip
    if not tta:
        command.append("--disable_tta")
    if save_probabilities:
        command.append("--save_probabilities")
    return command


def shell_line(command: Sequence[str]) -> str:
    """The command as a line a user can paste into a POSIX shell."""
    return " ".join(shlex.quote(str(part)) for part in command)
