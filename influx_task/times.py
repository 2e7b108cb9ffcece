"""Durations ("10s", "1h30m") and times (RFC3339, ns, "now", "-7d"), exact to the nanosecond."""

from __future__ import annotations

import datetime as dt
import re

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
    "w": 7 * 86400 * 10**9,
}
_DURATION = re.compile(r"(\d+)(ns|us|ms|s|m|h|d|w)")


def parse_duration_ns(text: str | int) -> int:
    """Parse "1h30m", "10s", "250ms" (or an int of seconds) into nanoseconds."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"duration must be a string like '10s', got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"duration must not be negative, got {text!r}")
        return text * 10**9
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"bad duration {text!r}: expected e.g. '10s', '5m', '1h30m', '500ms'")
    return sum(int(n) * _UNITS_NS[u] for n, u in parts)


def rfc3339_from_ns(t_ns: int) -> str:
    seconds, nanos = divmod(t_ns, 10**9)
    stamp = (EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def ns_from_rfc3339(text: str) -> int:
    """Parse an RFC3339(Nano) timestamp such as 2021-01-01T00:00:10.5Z exactly to ns."""
    main, frac = text, ""
    if "." in text:
        main, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, zone = rest[:digits], rest[digits:]
        main += zone
    try:
        moment = dt.datetime.fromisoformat(main.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"bad RFC3339 timestamp {text!r}") from exc
    if moment.tzinfo is None:
        raise ValueError(f"RFC3339 timestamp {text!r} has no time zone")
    whole = (moment - EPOCH) // dt.timedelta(seconds=1)
    return int(whole) * 10**9 + int((frac + "000000000")[:9] or 0)


def parse_time_ns(text: str, *, now_ns: int) -> int:
    """A time as RFC3339 ("2024-01-01T00:00:00Z"), integer ns, "now", or relative "-2h"."""
    value = text.strip()
    if value == "now":
        return now_ns
    if value.startswith("-"):
        return now_ns - parse_duration_ns(value[1:])
    if value.isdigit():
        return int(value)
    return ns_from_rfc3339(value)
