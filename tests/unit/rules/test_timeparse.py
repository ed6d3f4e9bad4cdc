from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audience_manager.rules.timeparse import (
    MAX_DURATION_MS,
    MAX_WINDOW_MS,
    parse_duration_ms,
    parse_timestamp_ms,
    try_timestamp_ms,
)

SECOND = 1_000
DAY = 86_400 * SECOND


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1s", SECOND),
        ("90s", 90 * SECOND),
        ("15m", 15 * 60 * SECOND),
        ("2h", 2 * 3600 * SECOND),
        ("30d", 30 * DAY),
        ("365d", 365 * DAY),
        ("007d", 7 * DAY),
        ("100000d", 100_000 * DAY),
    ],
)
def test_parse_duration_ms_valid(text: str, expected: int) -> None:
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0s", "duration must be positive"),
        ("0d", "duration must be positive"),
        ("", "invalid duration"),
        ("d", "invalid duration"),
        ("30", "invalid duration"),
        ("30D", "invalid duration"),
        ("30w", "invalid duration"),
        ("1.5h", "invalid duration"),
        ("-1d", "invalid duration"),
        ("+1d", "invalid duration"),
        (" 1d", "invalid duration"),
        ("1d ", "invalid duration"),
        ("1d\n", "invalid duration"),
        ("1 d", "invalid duration"),
        ("1h30m", "invalid duration"),
        ("٣d", "invalid duration"),  # non-ASCII digits
        ("P1D", "invalid duration"),
        ("99999999999999999999d", "too large"),
    ],
)
def test_parse_duration_ms_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration_ms(text)


def test_parse_duration_ms_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration_ms(30)  # type: ignore[arg-type]


def test_limits() -> None:
    assert MAX_WINDOW_MS == 365 * DAY
    assert parse_duration_ms(f"{MAX_DURATION_MS // SECOND}s") <= MAX_DURATION_MS


def _ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01", 0),
        ("2024-03-01", _ms(2024, 3, 1)),
        ("2024-03-01T00:00:00", _ms(2024, 3, 1)),
        ("2024-03-01T10:20:30Z", _ms(2024, 3, 1, 10, 20, 30)),
        ("2024-03-01T10:20:30+00:00", _ms(2024, 3, 1, 10, 20, 30)),
        ("2024-03-01T10:20:30+02:00", _ms(2024, 3, 1, 8, 20, 30)),
        ("2024-03-01T10:20:30-05:30", _ms(2024, 3, 1, 15, 50, 30)),
        ("2024-03-01T10:20", _ms(2024, 3, 1, 10, 20)),
        ("2024-03-01 10:20:30", _ms(2024, 3, 1, 10, 20, 30)),
        ("2024-03-01T10:20:30.5Z", _ms(2024, 3, 1, 10, 20, 30) + 500),
        ("2024-03-01T10:20:30.123Z", _ms(2024, 3, 1, 10, 20, 30) + 123),
        ("2024-03-01T10:20:30.123999Z", _ms(2024, 3, 1, 10, 20, 30) + 123),
        ("2024-03-01T10:20:30.123999999Z", _ms(2024, 3, 1, 10, 20, 30) + 123),
        ("1969-12-31T23:59:59.9999Z", -1),
        ("1969-12-31T23:59:59Z", -1000),
        ("2024-02-29", _ms(2024, 2, 29)),
        ("0001-01-01", _ms(1, 1, 1)),
        ("9999-12-31T23:59:59.999Z", _ms(9999, 12, 31, 23, 59, 59) + 999),
    ],
)
def test_parse_timestamp_ms_valid(text: str, expected: int) -> None:
    assert parse_timestamp_ms(text) == expected
    assert try_timestamp_ms(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024",
        "2024-03",
        "20240301",  # basic form: a string of digits is not a time
        "2024-W10",
        "2024-W10-1",
        "2024-13-01",
        "2023-02-29",
        "2024-03-32",
        "2024-03-01T25:00",
        "2024-03-01T10:00:60",
        "2024-03-01T10:00:00+25:00",
        "2024-03-01T",
        " 2024-03-01",
        "2024-03-01 ",
        "2024-03-01x",
        "2024/03/01",
        "01-03-2024",
        "yesterday",
        "7d",
        "٢٠٢٤-03-01",
    ],
)
def test_parse_timestamp_ms_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid ISO-8601 timestamp"):
        parse_timestamp_ms(text)
    assert try_timestamp_ms(text) is None


@pytest.mark.parametrize(
    "value", [None, 0, 1709251200000, 1.5, True, b"2024-03-01", ["2024-03-01"], {"a": 1}]
)
def test_try_timestamp_ms_non_strings(value: object) -> None:
    assert try_timestamp_ms(value) is None


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_parse_timestamp_ms_matches_datetime(moment: datetime) -> None:
    expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert parse_timestamp_ms(moment.isoformat()) == expected
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    assert parse_timestamp_ms(naive.isoformat()) == expected


@given(st.text(max_size=40))
def test_try_timestamp_ms_never_raises(text: str) -> None:
    result = try_timestamp_ms(text)
    assert result is None or isinstance(result, int)
