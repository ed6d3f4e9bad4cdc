"""Concurrent writers on one catalog file: revisions stay ordered, checks stay sound."""

import catalog_races
from sqlalchemy import Engine


def test_concurrent_writes_take_distinct_revisions_and_none_is_missed(engine: Engine) -> None:
    catalog_races.revisions_are_distinct_and_none_is_missed(engine)


def test_concurrent_replaces_cannot_close_a_cycle(engine: Engine) -> None:
    catalog_races.replaces_cannot_close_a_cycle(engine)


def test_concurrent_creates_of_one_name_leave_one_segment(engine: Engine) -> None:
    catalog_races.creates_of_one_name_leave_one_segment(engine)
