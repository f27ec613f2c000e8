"""The SHA-256 of a weights file, recorded wherever a checkpoint enters a model.

Plans and training logs name a checkpoint by path, which says nothing once the file is replaced;
the digest tells which weights were really used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the file, read in 4 MiB blocks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
