"""Times and durations as users type them, and times as the tool prints them.

Everything inside the tool is UTC nanoseconds since the epoch (``time_ns``
in the database); only user input may be local time.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

from .errors import BadInput

_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}
# "90s", "2h", and compounds such as "1h30m"
_AGE = re.compile(r"(?:\d+[smhdw])+")
_PART = re.compile(r"(\d+)([smhdw])")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _age_ns(text: str) -> int | None:
    if not _AGE.fullmatch(text):
        return None
    return sum(int(n) * _UNIT_NS[unit] for n, unit in _PART.findall(text))


def parse_time(text: str, now_ns: int | None = None) -> int:
    """ISO 8601 date/datetime, an age such as ``10m`` (meaning that long ago), or ``now``."""
    value = text.strip()
    if now_ns is None:
        now_ns = time.time_ns()
    if value == "now":
        return now_ns
    age = _age_ns(value)
    if age is not None:
        return now_ns - age
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.astimezone()  # a naive time is the user's local time
        # integer arithmetic: a float timestamp would lose the microseconds
        return (moment - _EPOCH) // timedelta(microseconds=1) * 1000
    except (ValueError, OverflowError, OSError):
        raise BadInput(
            f"bad time {text!r}: use ISO 8601 (2026-11-20T10:00) or an age like 10m, 2h, 3d"
        ) from None


def parse_duration(text: str) -> float:
    """A positive duration such as ``90s``, ``15m``, ``1h``, ``1d`` (or ``1h30m``), in seconds."""
    ns = _age_ns(text.strip())
    if not ns:  # None (unparsable) or 0
        raise BadInput(f"bad duration {text!r}: use a positive duration like 90s, 15m, 1h, 1d")
    return ns / 10**9


# the last whole second formatted, and its text: records come many to a second, and a streamed
# record's time is formatted up to three times (a tuple, swapped whole: threads may share it)
_last_second: tuple[int | None, str] = (None, "")


def _second(seconds: int) -> str:
    global _last_second
    last, text = _last_second
    if seconds != last:
        # gmtime and %-formatting: several times faster than datetime
        text = "%04d-%02d-%02dT%02d:%02d:%02d" % time.gmtime(seconds)[:6]
        _last_second = (seconds, text)
    return text


def format_time(ns: int) -> str:
    """ISO 8601 UTC with microseconds, e.g. ``2026-11-20T10:00:05.123456Z``."""
    seconds, rest = divmod(ns, 10**9)
    return _second(seconds) + ".%06dZ" % (rest // 1000)


def format_time_ns(ns: int) -> str:
    """ISO 8601 (RFC 3339) UTC with every nanosecond, e.g. ``2026-11-20T10:00:05.123456789Z``:
    a time exactly as recorded, for the formats that carry it whole (formats/)."""
    seconds, rest = divmod(ns, 10**9)
    return _second(seconds) + ".%09dZ" % rest


def format_duration(ns: int | None) -> str:
    """A duration for people, to its useful precision: ``850us``, ``12ms``, ``1.5s``,
    ``14m05s``, ``3h20m``, ``4d02h``; empty for None."""
    if ns is None:
        return ""
    if ns < 10**9:
        return f"{ns / 1e6:.0f}ms" if ns >= 10**6 else f"{ns / 1e3:.0f}us"
    s = ns / 1e9
    if s < 120:
        return f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h < 48 else f"{h // 24}d{h % 24:02d}h"
