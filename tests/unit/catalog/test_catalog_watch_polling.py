"""Where changes are not announced (SQLite), the watcher asks for a check at an interval."""

import time

from audience_manager.catalog import CatalogWatcher


def test_a_check_is_due_first_and_then_once_per_interval(catalog_url: str) -> None:
    watcher = CatalogWatcher(catalog_url, poll_every=0.2)
    try:
        assert watcher.changed()
        assert not watcher.changed()
        started = time.monotonic()
        assert watcher.changed(timeout=1)
        assert 0.2 <= time.monotonic() - started < 0.5
        assert not watcher.changed(timeout=0.1)
    finally:
        watcher.close()
