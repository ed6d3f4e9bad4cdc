"""A state directory written by the row-per-member layout opens with nothing lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from audience_manager.store import ChangeRecord, EmbeddedStateStore

_OLD = """
CREATE TABLE profiles (dense INTEGER PRIMARY KEY, user_id TEXT NOT NULL UNIQUE, doc BLOB NOT NULL);
CREATE TABLE members (
    segment_id TEXT NOT NULL, dense INTEGER NOT NULL, PRIMARY KEY (segment_id, dense)
) WITHOUT ROWID;
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, segment_id TEXT NOT NULL, user_id TEXT NOT NULL,
    dense INTEGER NOT NULL, change TEXT NOT NULL, at INTEGER NOT NULL
);
CREATE TABLE sizes (segment_id TEXT PRIMARY KEY, size INTEGER NOT NULL);
INSERT INTO profiles VALUES (0, 'a', '{"userId":"a"}'), (70000, 'b', '{"userId":"b"}');
INSERT INTO members VALUES ('s', 0), ('s', 70000), ('t', 70000);
INSERT INTO changes (segment_id, user_id, dense, change, at) VALUES
    ('s', 'a', 0, 'enter', 5), ('s', 'b', 70000, 'enter', 6), ('t', 'b', 70000, 'enter', 7);
INSERT INTO sizes VALUES ('s', 2), ('t', 1);
"""


def test_members_and_change_lines_move_into_blocks(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    with sqlite3.connect(tmp_path / "state" / "state.db") as db:
        db.executescript(_OLD)
    store = EmbeddedStateStore(tmp_path / "state")
    assert sorted(store.bitmap("s")) == [0, 70000]
    assert store.members("s", None, 10) == (["a", "b"], None)
    assert store.user_segments("b") == ["s", "t"]
    assert store.sizes() == {"s": 2, "t": 1}
    assert store.last_change() == 3
    assert store.changes_since(1) == [
        (2, ChangeRecord("s", "b", 70000, "enter", 6)),
        (3, ChangeRecord("t", "b", 70000, "enter", 7)),
    ]
    store.close()
    reopened = EmbeddedStateStore(tmp_path / "state")  # nothing left to move
    assert reopened.last_change() == 3
    reopened.close()
