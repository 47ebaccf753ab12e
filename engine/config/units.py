"""Strict parsing of the units config values carry: durations and byte sizes.

In YAML the value carries its unit (``timeout: 5s``, ``memory: 256MiB``); in
Python the unit goes into the type (:class:`Seconds`, :class:`Bytes`).  A value
without a unit, with an unknown unit or with anything left over is an error,
never a default: "5 parsecs" must not quietly become five seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "B": 1,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
}
_NUMBER_UNIT = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z]+)")


class Seconds(float):
    """A duration in seconds, parsed from "500ms", "5s", "2m", "1h" or "90d"."""

    def __repr__(self) -> str:
        return f"Seconds({float(self)!r})"


class Bytes(int):
    """A size in bytes, parsed from "512B", "64KiB", "256MiB", "1GiB" (or KB/MB/GB)."""

    def __repr__(self) -> str:
        return f"Bytes({int(self)!r})"


def parse_duration(text: object) -> Seconds:
    """Parse a duration string; raise ValueError naming the accepted forms."""
    number, unit = _split(text, _DURATION_UNITS, "a duration (e.g. 500ms, 5s, 2m)")
    return Seconds(number * _DURATION_UNITS[unit])


def parse_size(text: object) -> Bytes:
    """Parse a size string into whole bytes; raise ValueError naming the accepted forms."""
    number, unit = _split(text, _SIZE_UNITS, "a size (e.g. 64KiB, 256MiB, 1GiB)")
    value = number * _SIZE_UNITS[unit]
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return Bytes(int(value))


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for summaries."""
    for unit in ("h", "m", "s"):
        count = seconds / _DURATION_UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{round(seconds * 1000)}ms"


def format_size(size: int) -> str:
    """The shortest exact binary spelling of a size, for summaries."""
    for unit in ("GiB", "MiB", "KiB"):
        count = size / _SIZE_UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{size}B"


def _split(text: object, units: Mapping[str, float], expected: str) -> tuple[float, str]:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not {expected}: write the unit too")
    match = _NUMBER_UNIT.fullmatch(text.strip())
    if match is None or match["unit"] not in units:
        raise ValueError(f"{text!r} is not {expected}")
    return float(match["number"]), match["unit"]
