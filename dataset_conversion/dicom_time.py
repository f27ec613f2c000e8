"""Parse DICOM DA/TM/DT strings into ``datetime`` (pydicom leaves them as strings by default).

Kept apart from the SUV logic because the formats are fiddly (fractions, old colon style, UTC
offsets) and worth testing on their own.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time

_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")


def parse_da(value: object) -> date | None:
    text = str(value or "").strip().replace(".", "").replace("-", "")
    if not text:
        return None
    return datetime.strptime(text, "%Y%m%d").date()


def parse_tm(value: object) -> time | None:
    text = str(value or "").strip().replace(":", "")
    if not text:
        return None
    m = _TM.match(text)
    if not m:
        raise ValueError(f"not a DICOM time: {value!r}")
    hh, mm, ss, frac = m.groups()
    micro = int((frac or "0").ljust(6, "0"))
    return time(int(hh), int(mm or 0), int(ss or 0), micro)


def parse_dt(value: object) -> datetime | None:
    """DICOM DT; a UTC offset is dropped after conversion to naive local time of the header."""
    text = str(value or "").strip()
    if not text:
        return None
    m = _DT.match(text)
    if not m:
        raise ValueError(f"not a DICOM date-time: {value!r}")
    y, mo, d, hh, mi, ss, frac, _offset = m.groups()
    micro = int((frac or "0").ljust(6, "0"))
    return datetime(int(y), int(mo or 1), int(d or 1), int(hh or 0), int(mi or 0), int(ss or 0), micro)


def combine(day: date | None, moment: time | None) -> datetime | None:
    if day is None or moment is None:
        return None
    return datetime.combine(day, moment)
