"""Durations (``30d``) and ISO-8601 timestamps as epoch milliseconds.

Pure functions shared by rule validation and the evaluators; no dependency beyond the
standard library.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = [
    "MAX_DURATION_MS",
    "MAX_WINDOW_MS",
    "parse_duration_ms",
    "parse_timestamp_ms",
    "try_timestamp_ms",
]

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# A fixed, trusted pattern: ASCII digits only (``\d`` would also take other scripts' digits).
_DURATION = re.compile(r"([0-9]+)([smhd])")

MAX_WINDOW_MS = 365 * _UNIT_MS["d"]
"""The longest sliding window (``within``) a rule or computed attribute may use."""

# Keeps "now minus a duration" well inside the range of a 64-bit integer and a float.
MAX_DURATION_MS = 2**53 - 1
"""The largest duration accepted at all (about 285,000 years)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def parse_duration_ms(text: str) -> int:
    """Parse a duration such as ``90s``, ``15m``, ``2h`` or ``30d`` into milliseconds.

    Raises ``ValueError`` with a message fit for a user when ``text`` is not a positive
    whole number followed by one of the units ``s m h d``.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string like '30d', not {type(text).__name__}")
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use a whole number and a unit s, m, h or d, like '30d'"
        )
    amount = int(match.group(1))
    if amount == 0:
        raise ValueError("duration must be positive")
    millis = amount * _UNIT_MS[match.group(2)]
    if millis > MAX_DURATION_MS:
        raise ValueError(f"duration {text!r} is too large")
    return millis


def parse_timestamp_ms(value: str) -> int:
    """Parse an ISO-8601 date or date-time into epoch milliseconds (UTC).

    A date alone is midnight UTC and a date-time without a zone is UTC; ``Z`` and
    ``+hh:mm`` offsets are honoured. Fractional seconds are truncated to milliseconds.
    Only the extended form (``YYYY-MM-DD...``) is accepted, so that strings of digits such
    as ``"20240301"`` are never mistaken for times. Raises ``ValueError`` otherwise.
    """
    if not _looks_like_iso_date(value):
        raise ValueError(f"invalid ISO-8601 timestamp {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid ISO-8601 timestamp {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    # Floor division: dropping sub-millisecond digits moves a time back, before 1970 too.
    return (parsed - _EPOCH) // _ONE_MS


def try_timestamp_ms(value: object) -> int | None:
    """Return ``value`` as epoch milliseconds if it is an ISO-8601 string, else ``None``.

    Never raises: any other type or any other string gives ``None``.
    """
    if not isinstance(value, str) or not _looks_like_iso_date(value):
        return None
    try:
        return parse_timestamp_ms(value)
    except ValueError:
        return None


def _looks_like_iso_date(value: object) -> bool:
    # A cheap shape check first: most strings met while evaluating are not timestamps, and
    # it also rules out the basic (``20240301``) and week (``2024-W10``) forms.
    return (
        isinstance(value, str)
        and len(value) >= 10
        and value[4] == "-"
        and value[7] == "-"
        and value[:4].isascii()
        and value[:4].isdigit()
    )
