"""Case identifiers that nnU-Net and file systems accept, with collisions caught.

nnU-Net splits a file name into case id and channel by the trailing ``_XXXX``; anything outside
``[A-Za-z0-9_-]`` can break that or the shell. Sanitising may map two inputs to one id, which would
silently overwrite a case, so the registry refuses it.
"""

from __future__ import annotations

import re

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]+")


def sanitise_case_id(name: str) -> str:
    """Replace every run of disallowed characters with ``-`` and strip separators at the ends."""
    cleaned = _NOT_ALLOWED.sub("-", name.strip()).strip("-_")
    if not cleaned:
        raise ValueError(f"case name {name!r} has no usable characters")
    return cleaned


class CaseIdRegistry:
    """Remembers which source produced each case id; a second source for one id is an error."""

    def __init__(self) -> None:
        self._source_of: dict[str, str] = {}

    def register(self, case_id: str, source: str) -> str:
        from .errors import ConversionError

        previous = self._source_of.get(case_id)
        if previous is not None and previous != source:
            raise ConversionError(source, f"case id {case_id!r} collides with {previous!r} after sanitising")
        self._source_of[case_id] = source
        return case_id

    def __len__(self) -> int:
        return len(self._source_of)
