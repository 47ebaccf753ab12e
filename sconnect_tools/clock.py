"""Current date and time in a named time zone.

``now(timezone="UTC")`` returns::

    {"iso": "2025-03-01T14:05:09+01:00", "timezone": "Europe/Berlin",
     "unix": 1740834309, "weekday": "Saturday",
     "utc_offset": "+01:00", "abbreviation": "CET"}

Time zones are IANA names (``Europe/Berlin``, ``America/New_York``, ``UTC``) read
from the system tz database through :mod:`zoneinfo`; stdlib only, because the sandbox
runner starts Python with ``-I -S``.

Error handling: a name that is not a string, is malformed or is not in the database
raises ``ValueError`` explaining how to spell one (with close matches when there are
any). Nothing here blocks or has side effects.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import zoneinfo

__all__ = ["now"]

# Longest IANA names are about 30 characters; anything far longer is not a zone name
# and should not be fed to difflib against ~600 candidates.
_MAX_NAME_CHARS = 64

_HOW_TO_SPELL = (
    "use an IANA time zone name such as 'UTC', 'Europe/Berlin', 'America/New_York' or 'Asia/Tokyo'"
)


def now(timezone: str = "UTC") -> dict[str, object]:
    """Return the current time in ``timezone`` (an IANA name, default ``UTC``)."""
    tz, name = _zone(timezone)
    current = _dt.datetime.now(tz).replace(microsecond=0)
    offset = current.utcoffset() or _dt.timedelta(0)
    return {
        "iso": current.isoformat(),
        "timezone": name,
        "unix": int(current.timestamp()),
        "weekday": current.strftime("%A"),
        "utc_offset": _format_offset(offset),
        "abbreviation": current.tzname() or name,
    }


def _zone(name: object) -> tuple[_dt.tzinfo, str]:
    if not isinstance(name, str):
        raise ValueError(f"timezone must be a string; {_HOW_TO_SPELL}")
    cleaned = name.strip()
    if not cleaned or len(cleaned) > _MAX_NAME_CHARS:
        raise ValueError(f"timezone {name!r} is not a time zone name; {_HOW_TO_SPELL}")
    if cleaned.upper() in ("UTC", "Z", "GMT"):
        # Works even where the tz database is not mounted into the sandbox.
        return _dt.UTC, "UTC"
    try:
        return zoneinfo.ZoneInfo(cleaned), cleaned
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: malformed keys such as "../etc/passwd"; OSError: unreadable file.
        pass
    known = _available()
    if not known:
        raise ValueError(
            f"unknown timezone {name!r}: the time zone database is not available here, "
            "so only 'UTC' works"
        )
    # People type "europe/berlin"; accept it when it names exactly one zone.
    by_fold = [zone for zone in known if zone.casefold() == cleaned.casefold()]
    if len(by_fold) == 1:
        return zoneinfo.ZoneInfo(by_fold[0]), by_fold[0]
    suggestions = difflib.get_close_matches(cleaned, sorted(known), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(s) for s in suggestions)}?)" if suggestions else ""
    raise ValueError(f"unknown timezone {name!r}{hint}; {_HOW_TO_SPELL}")


def _available() -> set[str]:
    try:
        return zoneinfo.available_timezones()
    except OSError:
        return set()


def _format_offset(offset: _dt.timedelta) -> str:
    total_minutes = int(offset.total_seconds()) // 60
    sign = "-" if total_minutes < 0 else "+"
    hours, minutes = divmod(abs(total_minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"
