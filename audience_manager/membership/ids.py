"""Dense user ids: every external ``userId`` string gets a small integer.

Segment bitmaps store these integers, so ids are assigned densely (0, 1, 2, ... in
first-seen order) and never reused: a released id keeps its slot, mapped to nothing,
so a stale bitmap bit can never turn into a different user.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_USER_IDS", "IdSpace", "UserIds"]

#: Dense ids live in Roaring bitmaps, which hold unsigned 32-bit integers.
MAX_USER_IDS = 2**32


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

    Memory is one ``dict[str, int]`` plus one ``list[str | None]``; the strings are
    shared between the two, so a million users cost little beyond their ids' text.
    """

    __slots__ = ("_dense", "_user_ids")

    def __init__(self) -> None:
        self._dense: dict[str, int] = {}
        # Index = dense id; released slots hold None and are never handed out again.
        self._user_ids: list[str | None] = []

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
        return len(self._user_ids)

    def intern(self, user_id: str) -> int:
        """Return the dense id of ``user_id``, assigning the next one if it is new."""
        dense = self._dense.get(user_id)
        if dense is None:
            dense = self._assign(user_id)
        return dense

    def intern_many(self, user_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Intern every id of ``user_ids`` and return their dense ids, in input order."""
        known = self._dense
        slots = self._user_ids
        if len(slots) + len(user_ids) > MAX_USER_IDS:
            self._check_room(sum(1 for user_id in set(user_ids) if user_id not in known))
        before = len(known)
        # Ids released by erasure are never reused, so the next id runs ahead of the dict.
        offset = len(slots) - before
        setdefault = known.setdefault
        if offset == 0:
            # len(known) is read before each insert: a new user gets the next dense id.
            result = [setdefault(user_id, len(known)) for user_id in user_ids]
        else:
            result = [setdefault(user_id, len(known) + offset) for user_id in user_ids]
        added = len(known) - before
        if added:
            slots.extend(list(itertools.islice(reversed(known), added))[::-1])
        return np.array(result, dtype=np.int64)

    def get(self, user_id: str) -> int | None:
        """Return the dense id of ``user_id``, or None if it was never seen or is released."""
        return self._dense.get(user_id)

    def get_many(self, user_ids: Sequence[str]) -> list[int | None]:
        """The dense id of each of ``user_ids`` (None where there is none), in order."""
        get = self._dense.get
        return [get(user_id) for user_id in user_ids]

    def user_id(self, dense: int) -> str:
        """Return the ``userId`` of a dense id; KeyError if unknown or released."""
        user_id = self._user_ids[dense] if 0 <= dense < len(self._user_ids) else None
        if user_id is None:
            raise KeyError(dense)
        return user_id

    def user_ids(self, dense: npt.NDArray[np.integer]) -> list[str]:
        """Return the ``userId`` of each dense id, in order; KeyError on any unknown one."""
        if dense.size == 0:
            return []
        slots = self._user_ids
        low, high = int(dense.min()), int(dense.max())
        if low < 0 or high >= len(slots):
            raise KeyError(low if low < 0 else high)
        result = [slots[i] for i in dense.tolist()]
        if None in result:
            raise KeyError(int(dense[result.index(None)]))
        return cast("list[str]", result)

    def release(self, user_id: str) -> int | None:
        """Forget ``user_id`` (erasure) and return its dense id, or None if unknown.

        The dense id is not reused: its slot stays empty for good.
        """
        dense = self._dense.pop(user_id, None)
        if dense is not None:
            self._user_ids[dense] = None
        return dense

    def _assign(self, user_id: str) -> int:
        self._check_room(1)
        dense = len(self._user_ids)
        self._dense[user_id] = dense
        self._user_ids.append(user_id)
        return dense

    def _check_room(self, wanted: int) -> None:
        if len(self._user_ids) + wanted > MAX_USER_IDS:
            raise OverflowError(f"no dense user ids left: at most {MAX_USER_IDS} can be assigned")
