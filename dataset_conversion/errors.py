"""One error class and one warning recorder shared by every converter.

Users meet converters through their error messages, so each message is one line that names the
file (or argument) and the problem. Warnings never change data silently: each one is printed and
recorded, so that the manifest written next to the dataset lists every compromise that was made.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path


class ConversionError(Exception):
    """Bad input. The message reads ``<where>: <problem>``, on one line."""

    def __init__(self, where: str | Path, problem: str):
        self.where = str(where)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.where}: {self.problem}")

    def __reduce__(self):  # rebuilt from (where, problem) when a worker process sends it back
        return (type(self), (self.where, self.problem))


@dataclass
class ConversionLog:
    """Collects warnings and informational notes; prints warnings as they happen.

    ``echo`` is a callable used for printing (``tqdm.write`` while a progress bar is shown) so that
    messages do not tear the bar apart.
    """

    warnings: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    quiet: bool = False

    def warn(self, where: str | Path, message: str, case: str | None = None) -> None:
        record = {"where": str(where), "message": message}
        if case is not None:
            record["case"] = case
        self.warnings.append(record)
        if not self.quiet:
            _echo(f"WARNING {where}: {message}")

    def note(self, where: str | Path, message: str) -> None:
        self.notes.append({"where": str(where), "message": message})

    def absorb(self, warnings: list[dict], notes: list[dict]) -> None:
        """Append records made by another log (a worker's), without printing them again."""
        self.warnings.extend(warnings)
        self.notes.extend(notes)

    def echo(self, warnings: list[dict]) -> None:
        """Print records made by another log (a worker's) as this log would have printed them."""
        if not self.quiet:
            for record in warnings:
                _echo(f"WARNING {record['where']}: {record['message']}")

    def warnings_for(self, case: str) -> list[str]:
        return [w["message"] for w in self.warnings if w.get("case") == case]


def _echo(text: str) -> None:
    """Print above a running tqdm bar when there is one."""
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    except Exception:  # pragma: no cover - tqdm is a dependency, this is belt and braces
        print(text, file=sys.stderr)
