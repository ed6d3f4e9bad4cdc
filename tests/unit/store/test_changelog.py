"""Change-log blocks: column-wise and back, and blocks of the earlier form still read."""

from __future__ import annotations

import msgspec

from audience_manager.store import ChangeBlock, ChangeRecord
from audience_manager.store.base import numbered_block
from audience_manager.store.changelog import decode_block, encode_block

LINES = [
    ChangeRecord("s", "a", 0, "enter", 5),
    ChangeRecord("t", "b\n\u00e9", 70_000, "exit", 6),
    ChangeRecord("", "c", 2**40, "erase", 7),
    ChangeRecord("s", "", -1, "drop", 2**62),
    ChangeRecord("t", "a", 0, "enter", 8),
]


def test_a_block_reads_back_as_its_lines() -> None:
    block = decode_block(encode_block(ChangeBlock.of(LINES)))
    assert len(block) == len(LINES)
    assert block.records() == LINES
    assert block.records(1, 3) == LINES[1:3]


def test_a_list_of_lines_is_encoded_as_its_block() -> None:
    assert encode_block(LINES) == encode_block(ChangeBlock.of(LINES))


def test_blocks_of_the_earlier_array_form_still_read() -> None:
    earlier = msgspec.msgpack.encode(LINES)
    assert decode_block(earlier).records() == LINES


def test_blocks_concatenated_read_as_their_lines_in_order() -> None:
    blocks = [ChangeBlock.of(LINES[:2]), ChangeBlock.of([]), ChangeBlock.of(LINES[2:])]
    joined = ChangeBlock.concat(blocks)
    assert joined.records() == LINES
    assert sorted(joined.segments) == ["", "s", "t"]
    assert decode_block(encode_block(joined)).records() == LINES


def test_numbered_block_skips_lines_already_read_and_stops_at_room() -> None:
    block = ChangeBlock.of(LINES)
    first, taken = numbered_block(10, block, 11, 2)
    assert first == 12
    assert taken.records() == LINES[2:4]
    assert numbered_block(10, block, 5, 100) == (10, block)
