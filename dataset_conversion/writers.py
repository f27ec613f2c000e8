"""Write outputs so that nothing is ever half-written.

* Single files go to a temporary name in the same folder and are renamed into place
  (``os.replace`` is atomic on one file system).
* A whole dataset is built in a hidden staging folder next to its final place and renamed when
  complete, so an interrupted run leaves either the previous dataset or none, never a dataset with
  half its cases. A stale staging folder from a killed run is hidden (nnU-Net only looks at
  ``DatasetXXX_*``) and is removed by the next run.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import uuid
from pathlib import Path

import SimpleITK as sitk

from .errors import ConversionError

_STAGING_MARK = ".partial-"

# gzip level of every .nii.gz written (0 = stored, 9 = smallest). ITK's own NIfTI writer ignores
# the compression level SimpleITK passes it and always spends level-6 effort, which made
# compression most of the conversion time; so NIfTI is written uncompressed by ITK and gzipped
# here at the chosen level. Levels 1-3 use ISA-L's gzip (the ``isal`` package, levels 1-3 only)
# when it is installed: the same gzip format, about three times faster than zlib's level 1.
# The default is chosen from the measurements in docs/benchmarks.md (benchmarks/conversion.py).
COMPRESSION_LEVELS = tuple(range(10))
DEFAULT_COMPRESSION = 2
ISAL_LEVELS = (1, 2, 3)

try:
    from isal import igzip as _isal_gzip
except ImportError:  # optional speed-up; zlib gives the same format
    _isal_gzip = None


def gzip_implementation(level: int) -> str:
    """Which library compresses at ``level`` here (recorded in dataset.json: bytes depend on it)."""
    return "isal" if _isal_gzip is not None and level in ISAL_LEVELS else "zlib"


def _gzip(data: bytes, level: int) -> bytes:
    if gzip_implementation(level) == "isal":
        return _isal_gzip.compress(data, level, mtime=0)
    return gzip.compress(data, compresslevel=level, mtime=0)


def _temporary_sibling(path: Path) -> Path:
    # keep the real extension last: SimpleITK picks the file format from it
    suffix = "".join(path.suffixes) or ".tmp"
    stem = path.name[: len(path.name) - len(suffix)] if suffix != ".tmp" else path.name
    return path.with_name(f".{stem}.tmp-{uuid.uuid4().hex[:8]}{suffix}")


def write_image(image: sitk.Image, path: Path, compression: int = DEFAULT_COMPRESSION) -> None:
    """Write an image, format from the extension; ``.nii.gz`` gzipped at level ``compression``.

    The gzip stream carries no time stamp, so the same image always gives the same bytes.
    """
    path = Path(path)
    if compression not in COMPRESSION_LEVELS:
        raise ConversionError("--compression", f"{compression} is not a gzip level 0..9")
    if not path.name.endswith(".nii.gz"):
        sitk.WriteImage(image, str(path), useCompression=compression > 0, compressionLevel=compression)
        return
    plain = path.with_name(path.name[: -len(".gz")] + ".plain.nii")
    try:
        sitk.WriteImage(image, str(plain), useCompression=False)
        path.write_bytes(_gzip(plain.read_bytes(), compression))
    finally:
        if plain.exists():
            plain.unlink()


def write_image_atomic(image: sitk.Image, path: Path, compression: int = DEFAULT_COMPRESSION) -> None:
    """Write an image (see ``write_image``) under a temporary name, then rename."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        write_image(image, tmp, compression)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(data: object, path: Path) -> None:
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def refuse_non_empty(target: Path, overwrite: bool) -> None:
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ConversionError(target, "output folder exists and is not empty; pass --overwrite to replace it")


class StagedFolder:
    """Build a folder under a hidden temporary name and move it into place on ``commit``.

    Use as a context manager: leaving the block without ``commit`` (an error, Ctrl-C) deletes the
    staging folder. ``commit`` replaces an existing target only when ``overwrite`` was given.
    """

    def __init__(self, target: Path, overwrite: bool = False):
        self.target = Path(target)
        self.overwrite = overwrite
        refuse_non_empty(self.target, overwrite)
        self.path = self.target.parent / f".{self.target.name}{_STAGING_MARK}{uuid.uuid4().hex[:8]}"
        self.committed = False

    def __enter__(self) -> StagedFolder:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.target.parent.glob(f".{self.target.name}{_STAGING_MARK}*"):
            shutil.rmtree(stale, ignore_errors=True)  # left over by a killed run of ours
        self.path.mkdir()
        return self

    def commit(self) -> Path:
        refuse_non_empty(self.target, self.overwrite)  # someone may have written it meanwhile
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.target, old)
        os.replace(self.path, self.target)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def __exit__(self, *exc) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)
