"""Every file the repository's text cites exists in the repository.

A reader who clones only this repository must be able to open every document and file the code,
docs and scripts point to. This test scans the text files of the checkout (tracked, plus new files
git does not ignore) for path-like references and fails, listing file:line, for each that resolves
to nothing. What counts as a reference (precise enough that prose, external paths and output file
names do not trip it):

* any bare ``<name>.md`` token, and any ``.../docs/.../<name>.md`` one: a document, which must be a
  file of the repository (relative to the root or to the citing file; a bare name anywhere in it);
* any ``dir/.../file.<ext>`` token (ext: py, sh, md, txt, toml, json, cu, cuh, cpp, h, cfg, yml,
  yaml) whose first folder is one of the repository's own (a top-level folder, or a subpackage of
  ``nnunetv2_cipa`` for package-relative paths), or that starts with ``./`` or ``../``.

Not references: URLs; tokens written as a quoted string literal (output names such as a results
file a command writes); paths whose first folder is not ours (another project's source, e.g.
``models/builder.py`` of the official CIPA repository, or ``nnunetv2/...``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = ("md", "py", "sh", "txt", "toml", "json", "cuh", "cu", "cpp", "h", "cfg", "yml", "yaml")
TOKEN = re.compile(
    r"(?<![\w./:@-])((?:\.{1,2}/)?(?:[\w.-]+/)*[\w-][\w.-]*\.(?:" + "|".join(EXTENSIONS) + r"))(?![\w/-])"
)
URL = re.compile(r"\b(?:https?|file)://\S+")


def repository_files(root: Path) -> list[Path]:
    """Tracked files and new files git does not ignore (relative paths)."""
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True, check=True,
    ).stdout.decode()
    return sorted({Path(p) for p in out.split("\0") if p and (root / p).is_file()})


def own_roots(files: list[Path]) -> set[str]:
    """First folders a reference must resolve under: top-level folders and nnunetv2_cipa's subpackages."""
    roots = {f.parts[0] for f in files if len(f.parts) > 1}
    roots |= {f.parts[1] for f in files if len(f.parts) > 2 and f.parts[0] == "nnunetv2_cipa"}
    return roots


def broken_references(text: str, source: Path, files: list[Path], root: Path) -> list[tuple[int, str]]:
    """(line number, reference) for each reference in ``text`` (the content of ``source``) that
    resolves to no file or folder of the repository."""
    known = {f.as_posix() for f in files} | {p.as_posix() for f in files for p in f.parents}
    basenames = {f.name for f in files}
    roots = own_roots(files)
    broken = []
    for number, line in enumerate(text.splitlines(), 1):
        line = URL.sub(" ", line)
        for match in TOKEN.finditer(line):
            token = match.group(1)
            before, after = line[match.start(1) - 1 : match.start(1)], line[match.end(1) : match.end(1) + 1]
            if before in ("'", '"') and after == before:
                continue  # a string literal in code: a name the program writes, not a citation
            parts = token.split("/")
            relative = parts[0] in (".", "..")
            ours = len(parts) > 1 and parts[0] in roots
            document = token.endswith(".md") and (len(parts) == 1 or "docs" in parts[:-1])
            if not (ours or relative or document):
                continue
            candidates = [
                (source.parent / token),
                Path(token),
                Path("nnunetv2_cipa") / token,
            ]
            if any(_normal(c) in known for c in candidates):
                continue
            if len(parts) == 1 and token in basenames:
                continue
            broken.append((number, token))
    return broken


def _normal(path: Path) -> str:
    out: list[str] = []
    for part in path.parts:
        if part == "..":
            if out:
                out.pop()
        elif part != ".":
            out.append(part)
    return "/".join(out)


def test_every_cited_file_exists():
    files = repository_files(ROOT)
    problems = []
    for path in files:
        try:
            text = (ROOT / path).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files cite nothing
        problems += [f"{path}:{n}: {ref}" for n, ref in broken_references(text, path, files, ROOT)]
    assert problems == [], "references to files that are not in the repository:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "broken"),
    [
        # the broken names are quoted pieces, so that this file itself cites nothing missing
        ("(see cipa" + "_reference.md" + " §1.2)", ["cipa" + "_reference.md"]),
        ("details in ``docs/" + "INSTALL.md" + "``.", ["docs/" + "INSTALL.md"]),
        ("see shared/docs/" + "data_reference.md" + " 3", ["shared/docs/" + "data_reference.md"]),
        ("run " + "benchmarks/no_such_script.py" + " first", ["benchmarks/no_such_script.py"]),
        ("as in " + "trainers/no_such_module.py" + ".", ["trainers/no_such_module.py"]),
        ("and " + "../missing/thing.py", ["../missing/thing.py"]),
        ("writes eval/table.md and eval/metrics.json", []),
        ("docs/trainers.md, README.md and docs/benchmarks.md.", []),
        ("architectures/counting.py and trainers/short_schedules.py", []),
        ("official models/builder.py and nnunetv2/inference/predict_from_raw_data.py", []),
        ('out / "table.md" and f"{out / \'metrics.json\'}"', []),
        ("https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/resenc_presets.md", []),
        ("version 2.3.2.post1, e.g. torch 2.13.0", []),
    ],
)
def test_the_scanner_finds_exactly_the_broken_references(line, broken):
    files = repository_files(ROOT)
    found = broken_references(line, Path("nnunetv2_cipa/example.py"), files, ROOT)
    assert [ref for _, ref in found] == broken
