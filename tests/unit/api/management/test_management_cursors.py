"""Member cursors are opaque, round-trip, and refuse anything they did not produce."""

import base64

import pytest

from audience_manager.api.management.cursors import decode_member_cursor, encode_member_cursor
from audience_manager.catalog.errors import InvalidInput


@pytest.mark.parametrize("dense", [0, 1, 41, 2**32 - 1])
def test_a_cursor_round_trips_and_hides_the_position(dense: int) -> None:
    cursor = encode_member_cursor("seg_a", dense)
    assert decode_member_cursor("seg_a", cursor) == dense
    assert str(dense) not in cursor or dense < 10
    assert "=" not in cursor


def _flip_last_byte(cursor: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[9] ^= 1  # the low byte of the position
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "%%%",
        "MTIz",
        _flip_last_byte(encode_member_cursor("seg_a", 7)),
        encode_member_cursor("seg_b", 7),
        encode_member_cursor("seg_a", 7)[:-2],
    ],
)
def test_a_tampered_or_borrowed_cursor_is_invalid_input_at_cursor(cursor: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        decode_member_cursor("seg_a", cursor)
    assert raised.value.details == [
        {"path": "cursor", "message": "not a cursor this listing returned"}
    ]
