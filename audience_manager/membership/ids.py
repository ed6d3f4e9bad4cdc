"""Dense user ids: every external ``userId`` string gets a small integer.

Segment bitmaps store these integers, so ids are assigned densely (0, 1, 2, ... in
first-seen order) and never reused: a released id keeps its slot, mapped to nothing,
so a stale bitmap bit can never turn into a different user.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from itertools import repeat
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_USER_IDS", "IdSpace", "UserIds"]

#: Dense ids live in Roaring bitmaps, which hold unsigned 32-bit integers.
MAX_USER_IDS = 2**32

_NONE = np.array(None, dtype=object)  # a released slot, to compare arrays of names with


class IdSpace(NamedTuple):
    """Where one engine's dense ids sit among the store's: ``local * stride + offset``.

    One engine for the whole log uses ``IdSpace(1, 0)``. With one engine per partition of
    ``P``, partition ``p`` uses ``IdSpace(P, p)``: the ids of all partitions interleave
    without overlapping, whichever processor assigns them, and stay dense overall.
    """

    stride: int = 1
    offset: int = 0

    def to_store(self, local: int) -> int:
        """The store's id of an engine id."""
        return local * self.stride + self.offset


class UserIds:
    """Bidirectional dictionary between ``userId`` strings and dense integer ids.

    Memory is one ``dict[str, int]`` plus one array of ``str | None`` by dense id; the
    strings are shared between the two, so a million users cost little beyond their ids'
    text. The array (rather than a list) turns many dense ids into user ids in one step.
    """

    __slots__ = ("_dense", "_names", "_size")

    def __init__(self) -> None:
        self._dense: dict[str, int] = {}
        # Index = dense id; released slots hold None and are never handed out again.
        self._names: npt.NDArray[np.object_] = np.empty(0, dtype=object)
        self._size = 0

    def __getstate__(self) -> dict[str, Any]:
        # Snapshots keep the list form of the names, as earlier versions wrote it.
        return {"_dense": self._dense, "_user_ids": self._names[: self._size].tolist()}

    def __setstate__(self, state: dict[str, Any] | tuple[None, dict[str, Any]]) -> None:
        if isinstance(state, tuple):  # pickled by an earlier version: (None, slots)
            state = state[1]
        self._dense = state["_dense"]
        names: list[str | None] = state["_user_ids"]
        self._names = np.empty(len(names), dtype=object)
        self._names[:] = names
        self._size = len(names)

    def __len__(self) -> int:
        """Number of live (interned and not released) user ids."""
        return len(self._dense)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._dense

    def __repr__(self) -> str:
        return f"UserIds(live={len(self)}, capacity={self.capacity})"

    @property
    def capacity(self) -> int:
        """The next dense id to be assigned (live ids plus released slots)."""
        return self._size

    def intern(self, user_id: str) -> int:
        """Return the dense id of ``user_id``, assigning the next one if it is new."""
        dense = self._dense.get(user_id)
        if dense is None:
            dense = self._assign(user_id)
        return dense

    def intern_many(self, user_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Intern every id of ``user_ids`` and return their dense ids, in input order."""
        known = self._dense
        if self._size + len(user_ids) > MAX_USER_IDS:
            self._check_room(sum(1 for user_id in set(user_ids) if user_id not in known))
        found = self.rows(user_ids)
        if len(found) == 0 or found.min() >= 0:
            return found  # every one known already: the common case once users return
        before = len(known)
        # Ids released by erasure are never reused, so the next id runs ahead of the dict.
        offset = self._size - before
        setdefault = known.setdefault
        if offset == 0:
            # len(known) is read before each insert: a new user gets the next dense id.
            result = [setdefault(user_id, len(known)) for user_id in user_ids]
        else:
            result = [setdefault(user_id, len(known) + offset) for user_id in user_ids]
        added = len(known) - before
        if added:
            self._append(list(itertools.islice(reversed(known), added))[::-1])
        return np.array(result, dtype=np.int64)

    def get(self, user_id: str) -> int | None:
        """Return the dense id of ``user_id``, or None if it was never seen or is released."""
        return self._dense.get(user_id)

    def rows(self, user_ids: Collection[str]) -> npt.NDArray[np.int64]:
        """The dense id of each of ``user_ids`` (-1 where there is none), in order."""
        get = self._dense.get
        return np.fromiter(map(get, user_ids, repeat(-1)), dtype=np.int64, count=len(user_ids))

    def get_many(self, user_ids: Sequence[str]) -> list[int | None]:
        """The dense id of each of ``user_ids`` (None where there is none), in order."""
        get = self._dense.get
        return [get(user_id) for user_id in user_ids]

    def user_id(self, dense: int) -> str:
        """Return the ``userId`` of a dense id; KeyError if unknown or released."""
        user_id = self._names[dense] if 0 <= dense < self._size else None
        if user_id is None:
            raise KeyError(dense)
        return cast("str", user_id)

    def user_ids(self, dense: npt.NDArray[np.integer]) -> list[str]:
        """Return the ``userId`` of each dense id, in order; KeyError on any unknown one."""
        if dense.size == 0:
            return []
        low, high = int(dense.min()), int(dense.max())
        if low < 0 or high >= self._size:
            raise KeyError(low if low < 0 else high)
        names = self._names[dense]
        if len(self._dense) < self._size:  # some ids were released
            missing = np.flatnonzero(np.equal(names, _NONE))
            if len(missing):
                raise KeyError(int(dense[missing[0]]))
        return cast("list[str]", names.tolist())

    def released(self, dense: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
        """For each dense id, whether it was assigned and then released."""
        if len(self._dense) == self._size:
            return np.zeros(len(dense), dtype=np.bool_)
        return cast("npt.NDArray[np.bool_]", np.equal(self._names[dense], _NONE))

    def release(self, user_id: str) -> int | None:
        """Forget ``user_id`` (erasure) and return its dense id, or None if unknown.

        The dense id is not reused: its slot stays empty for good.
        """
        dense = self._dense.pop(user_id, None)
        if dense is not None:
            self._names[dense] = None
        return dense

    def _assign(self, user_id: str) -> int:
        self._check_room(1)
        dense = self._size
        self._dense[user_id] = dense
        self._append([user_id])
        return dense

    def _append(self, names: list[str]) -> None:
        end = self._size + len(names)
        if end > len(self._names):  # grow by half again, as a list does, but in one copy
            grown = np.empty(max(end, len(self._names) * 3 // 2, 64), dtype=object)
            grown[: self._size] = self._names[: self._size]
            self._names = grown
        self._names[self._size : end] = names
        self._size = end

    def _check_room(self, wanted: int) -> None:
        if self._size + wanted > MAX_USER_IDS:
            raise OverflowError(f"no dense user ids left: at most {MAX_USER_IDS} can be assigned")
