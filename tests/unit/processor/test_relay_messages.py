"""The relay's messages of a block are those of its lines one by one."""

from __future__ import annotations

from audience_manager.processor.relay import change_message, change_messages
from audience_manager.store import ChangeBlock, ChangeRecord


def test_messages_of_a_block_equal_messages_of_each_line() -> None:
    lines = [
        ChangeRecord('seg "x"\n', 'u\u00e9"\\', 3, "enter", 10),
        ChangeRecord("", "u2", -1, "erase", 11),
        ChangeRecord("s2", "u3", 5, "exit", 2**40),
        ChangeRecord("s", "", 0, "drop", 0),
    ]
    expected = [(line.user_id, change_message(7 + i, line)) for i, line in enumerate(lines)]
    assert change_messages(7, ChangeBlock.of(lines)) == expected
    assert change_messages(1, ChangeBlock.of([])) == []
