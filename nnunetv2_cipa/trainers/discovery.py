"""``nnunetv2_cipa setup``: make nnU-Net's stock commands find our trainers, with no user edits.

nnU-Net (2.8) resolves ``-tr NAME`` (train, ``--val``, ``--c``, predict) by walking the modules of
``nnunetv2/training/nnUNetTrainer/`` and then the folders listed in ``nnUNet_extTrainer``. Two
mechanisms, both written by this command and both removed by ``setup --uninstall``:

1. **Primary, official:** a ``.pth`` file in site-packages (``nnunetv2_cipa_ext_trainers.pth``)
   that, at every interpreter start of this environment, appends our dedicated re-export folder
   (``nnunetv2_cipa/nnunet_ext``) to ``nnUNet_extTrainer`` (kept if already set; opt out with
   ``NNUNETV2_CIPA_NO_AUTOCONFIG=1``). It is one guarded line: if the package is gone or anything
   fails it does nothing.
2. **Fallback, when the lookup still fails:** nnU-Net searches its own folder first, and on machines
   where ``torchvision`` cannot be imported (a CUDA torchvision on a CPU torch, as on our CI) that
   walk crashes in ``primus/`` before it ever reaches ``nnUNet_extTrainer``. A one-file re-export
   (``nnunetv2/training/nnUNetTrainer/nnunetv2_cipa_trainers.py``) is imported *before* the walk
   enters any subpackage, so the lookup succeeds there (and skips the walk). It also answers the
   short-schedule names and the ``nnUNet_extTrainer`` folders' trainers, which the crashing walk would
   never reach (:mod:`.fallback_lookup`). ``--shim auto`` (default) writes it only when a real lookup
   in a fresh interpreter fails without it.

"Uninstalling leaves nothing behind": both files are appended to our distribution's ``RECORD``,
so ``pip uninstall nnunetv2_cipa`` deletes them too; ``setup --uninstall`` deletes them explicitly.
If something survives anyway (e.g. nnunetv2 reinstalled first), both files are inert without the
package: the ``.pth`` checks the folder exists, the shim swallows the missing import.
Running ``setup`` again is idempotent: unchanged files are not rewritten.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

PTH_NAME = "nnunetv2_cipa_ext_trainers.pth"
SHIM_NAME = "nnunetv2_cipa_trainers.py"
OPT_OUT_ENV = "NNUNETV2_CIPA_NO_AUTOCONFIG"
CHECK_TRAINER = "nnUNetTrainerCIPA"

SHIM_TEXT = '''\
# Written by `nnunetv2_cipa setup`; removed by `nnunetv2_cipa setup --uninstall` and by
# `pip uninstall nnunetv2_cipa`. Harmless if left behind: it imports nothing when the plugin is gone.
"""Re-export of nnunetv2_cipa's trainers so that nnU-Net's own trainer search finds them first."""

try:
    from nnunetv2_cipa.trainers.catalog import *  # noqa: F401,F403
    from nnunetv2_cipa.trainers.fallback_lookup import __getattr__  # noqa: F401 - schedules, extTrainer
except ModuleNotFoundError as _error:
    if not (_error.name or "").startswith("nnunetv2_cipa"):
        import warnings as _warnings

        _warnings.warn(f"nnunetv2_cipa trainers are unavailable: {_error!r}", RuntimeWarning, stacklevel=1)
except Exception as _error:  # never break nnU-Net's lookup of other trainers
    import warnings as _warnings

    _warnings.warn(f"nnunetv2_cipa trainers are unavailable: {_error!r}", RuntimeWarning, stacklevel=1)
'''


def ext_folder() -> Path:
    """The dedicated re-export folder, located without importing torch or nnU-Net."""
    spec = importlib.util.find_spec("nnunetv2_cipa.nnunet_ext")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nnunetv2_cipa.nnunet_ext not found: is nnunetv2_cipa installed?")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def nnunet_package_dir() -> Path:
    spec = importlib.util.find_spec("nnunetv2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "nnunetv2 is not installed in this environment (pip install -c constraints.txt nnunetv2)"
        )
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def site_dir() -> Path:
    """The site-packages folder holding nnunetv2: our .pth must be processed by the same interpreter."""
    return nnunet_package_dir().parent


def pth_text(folder: Path) -> str:
    """One guarded line (site.py executes lines starting with ``import``)."""
    code = (
        "try:\n"
        f" p = {str(folder)!r}\n"
        f" if os.path.isdir(p) and not os.environ.get({OPT_OUT_ENV!r}):\n"
        "  parts = [x for x in os.environ.get('nnUNet_extTrainer', '').split(os.pathsep) if x]\n"
        "  if p not in parts:\n"
        "   os.environ['nnUNet_extTrainer'] = os.pathsep.join(parts + [p])\n"
        "except Exception:\n"
        " pass\n"
    )
    return f"import os; exec({code!r})\n"


def shim_path() -> Path:
    return nnunet_package_dir() / "training" / "nnUNetTrainer" / SHIM_NAME


def _record_file() -> Path | None:
    """Our distribution's RECORD (pip deletes every path listed there on uninstall)."""
    for info in sorted(site_dir().glob("nnunetv2_cipa-*.dist-info")):
        record = info / "RECORD"
        if record.is_file():
            return record
    return None


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _record_entries(paths: list[Path], add: bool) -> None:
    record = _record_file()
    if record is None or not os.access(record, os.W_OK):
        return
    base = record.parent.parent
    wanted = {p.relative_to(base).as_posix() for p in paths if p.is_relative_to(base)}
    lines = record.read_text().splitlines()
    kept = [line for line in lines if line.split(",", 1)[0] not in wanted]
    new = kept + ([f"{w},," for w in sorted(wanted)] if add else [])
    if new != lines:
        _write_if_changed(record, "\n".join(new) + "\n")


def _remove(path: Path) -> bool:
    removed = False
    if path.exists():
        path.unlink()
        removed = True
    cache = path.parent / "__pycache__"
    for pyc in cache.glob(f"{path.stem}.*.pyc") if path.suffix == ".py" else []:
        pyc.unlink()
    return removed


def check_lookup(trainer: str = CHECK_TRAINER, timeout: float = 300.0) -> tuple[bool, str]:
    """Run nnU-Net's own trainer lookup in a fresh interpreter (so the .pth is honoured)."""
    code = (
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f\n"
        f"c = f({trainer!r})\nprint(c.__module__ + '.' + c.__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return False, f"lookup timed out after {timeout:.0f} s"
    if out.returncode == 0:
        return True, out.stdout.strip().splitlines()[-1]
    last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
    return False, last


def install(shim: str = "auto", verify: bool = True, quiet: bool = False) -> int:
    say = (lambda *a: None) if quiet else print
    pth = site_dir() / PTH_NAME
    if _write_if_changed(pth, pth_text(ext_folder())):
        say(f"wrote {pth} (adds {ext_folder()} to nnUNet_extTrainer at interpreter start)")
    written = [pth]
    if shim == "always":
        if _write_if_changed(shim_path(), SHIM_TEXT):
            say(f"wrote {shim_path()}")
    elif shim == "never" and shim_path().exists():
        _remove(shim_path())
        say(f"removed {shim_path()}")
    if shim_path().exists():
        if _write_if_changed(shim_path(), SHIM_TEXT):  # an older plugin version's shim: refresh it
            say(f"updated {shim_path()}")
        written.append(shim_path())
    _record_entries(written, add=True)
    if not verify:
        return 0
    ok, detail = check_lookup()
    if not ok and shim == "auto":
        say(f"nnU-Net's trainer lookup failed without the fallback ({detail}); writing {shim_path()}")
        _write_if_changed(shim_path(), SHIM_TEXT)
        _record_entries([pth, shim_path()], add=True)
        ok, detail = check_lookup()
    if not ok:
        message = f"nnU-Net still cannot find {CHECK_TRAINER}: {' '.join(str(detail).split())}"
        print(f"nnunetv2_cipa setup: error: {message}", file=sys.stderr)
        return 1
    say(f"ok: nnU-Net resolves {CHECK_TRAINER} -> {detail}")
    return 0


def uninstall(quiet: bool = False) -> int:
    say = (lambda *a: None) if quiet else print
    targets = [site_dir() / PTH_NAME, shim_path()]
    for path in targets:
        if _remove(path):
            say(f"removed {path}")
    _record_entries(targets, add=False)
    say("nnunetv2_cipa setup removed; `pip uninstall nnunetv2_cipa` can follow.")
    return 0


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa setup") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--uninstall", action="store_true", help="remove everything setup wrote")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument(
        "--shim",
        choices=("auto", "always", "never"),
        default="auto",
        help="the in-nnunetv2 re-export fallback: write it only when needed (auto, default), "
        "always, or never (and remove it)",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the lookup check in a fresh interpreter"
    )
    args = parser.parse_args(argv)
    try:
        if args.uninstall:
            return uninstall(quiet=args.quiet)
        return install(shim=args.shim, verify=not args.no_verify, quiet=args.quiet)
    except (OSError, RuntimeError) as error:  # a failure while writing or checking
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
