"""How far a converted dataset is from the paper's counts (data_reference table row 16).

The paper's numbers are facts about the paper; whether our slice rule reproduces them is a
hypothesis, so the report states both and the difference, and never fails a run.
"""

from __future__ import annotations

PAPER = {
    "PCLT20K": {"pairs": 21930, "patients": 605, "train": 17416, "test": 4514},
    "STS": {"pairs": 2409, "patients": 51, "train": 1941, "test": 468},
}


def parity_report(dataset: str, measured: dict[str, int]) -> dict:
    """``{"paper": ..., "ours": ..., "difference": ...}`` for the keys both sides have."""
    paper = PAPER[dataset]
    diff = {k: measured[k] - paper[k] for k in paper if k in measured}
    return {"paper": paper, "ours": dict(measured), "difference": diff}


def format_parity(title: str, report: dict) -> str:
    parts = [f"{k} {report['ours'][k]:,} (paper {report['paper'][k]:,})" for k in report["difference"]]
    return f"{title}: " + ", ".join(parts)
