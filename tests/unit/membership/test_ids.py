import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audience_manager.membership import UserIds


def test_ids_are_dense_in_first_seen_order_and_stable() -> None:
    ids = UserIds()
    assert [ids.intern(u) for u in ["alice", "bob", "alice", "carol", "bob"]] == [0, 1, 0, 2, 1]
    assert len(ids) == 3
    assert ids.capacity == 3
    assert ids.get("bob") == 1
    assert ids.get("dave") is None
    assert ids.user_id(2) == "carol"
    assert "alice" in ids
    assert "dave" not in ids


def test_intern_many_assigns_new_ids_and_reuses_known_ones() -> None:
    ids = UserIds()
    ids.intern("known")
    dense = ids.intern_many(["a", "known", "b", "a", "c"])
    assert dense.dtype == np.int64
    assert dense.tolist() == [1, 0, 2, 1, 3]
    assert ids.intern_many([]).tolist() == []
    assert ids.user_ids(dense) == ["a", "known", "b", "a", "c"]
    assert ids.user_ids(np.array([], dtype=np.int64)) == []


def test_released_ids_are_forgotten_and_never_reused() -> None:
    ids = UserIds()
    ids.intern_many(["a", "b", "c"])
    assert ids.release("b") == 1
    assert ids.release("b") is None
    assert ids.release("never-seen") is None
    assert len(ids) == 2
    assert ids.capacity == 3
    assert "b" not in ids
    assert ids.get("b") is None
    with pytest.raises(KeyError):
        ids.user_id(1)
    with pytest.raises(KeyError):
        ids.user_ids(np.array([0, 1]))

    # The same user coming back is a new user with a new id.
    assert ids.intern("b") == 3
    assert ids.intern_many(["d", "b"]).tolist() == [4, 3]
    assert ids.user_id(0) == "a"
    assert ids.user_id(3) == "b"


@pytest.mark.parametrize("dense", [-1, 3, 2**40])
def test_unknown_dense_ids_raise_key_error(dense: int) -> None:
    ids = UserIds()
    ids.intern_many(["a", "b", "c"])
    with pytest.raises(KeyError):
        ids.user_id(dense)
    with pytest.raises(KeyError):
        ids.user_ids(np.array([0, dense], dtype=np.int64))


operations = st.lists(
    st.tuples(st.sampled_from(["intern", "release"]), st.sampled_from("abcdefgh")),
    max_size=60,
)


@given(operations)
def test_matches_a_reference_dictionary(ops: list[tuple[str, str]]) -> None:
    ids = UserIds()
    live: dict[str, int] = {}
    assigned: list[int] = []
    for op, user in ops:
        if op == "intern":
            dense = ids.intern(user)
            if user not in live:
                assert dense == len(assigned)
                live[user] = dense
                assigned.append(dense)
            assert dense == live[user]
        else:
            assert ids.release(user) == live.pop(user, None)
    assert len(ids) == len(live)
    assert ids.capacity == len(assigned)
    for user, dense in live.items():
        assert ids.get(user) == dense
        assert ids.user_id(dense) == user
    released = set(assigned) - set(live.values())
    for dense in released:
        with pytest.raises(KeyError):
            ids.user_id(dense)


def test_ids_survive_pickling_and_read_the_earlier_list_form() -> None:
    ids = UserIds()
    ids.intern_many(["a", "b", "c"])
    ids.release("b")
    restored = pickle.loads(pickle.dumps(ids))
    assert restored.user_ids(np.array([2, 0])) == ["c", "a"]
    assert restored.capacity == 3
    assert restored.intern("d") == 3
    earlier = UserIds.__new__(UserIds)
    earlier.__setstate__((None, {"_dense": {"a": 0, "c": 2}, "_user_ids": ["a", None, "c"]}))
    assert earlier.user_ids(np.array([0, 2])) == ["a", "c"]
    with pytest.raises(KeyError):
        earlier.user_ids(np.array([1]))


def test_rows_and_released() -> None:
    ids = UserIds()
    ids.intern_many(["a", "b", "c"])
    assert ids.rows(["c", "x", "a"]).tolist() == [2, -1, 0]
    assert ids.released(np.array([0, 1])).tolist() == [False, False]
    ids.release("b")
    assert ids.released(np.array([0, 1, 2])).tolist() == [False, True, False]
