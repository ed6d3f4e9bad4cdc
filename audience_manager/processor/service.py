"""Run the processor as a process: backends from settings, stop on SIGINT/SIGTERM."""

from __future__ import annotations

import functools
import gc
import logging
import signal
import threading
import time

from audience_manager.backends import open_backends, open_relay_ports
from audience_manager.bus.base import BusUnavailable
from audience_manager.catalog.errors import CatalogUnavailable
from audience_manager.catalog.watch import CatalogWatcher
from audience_manager.config import Settings
from audience_manager.processor.relay import CHANGES
from audience_manager.processor.runtime import Processor, ProcessorConfig
from audience_manager.store import Fenced, StoreUnavailable

__all__ = ["run_processor", "tune_gc"]

log = logging.getLogger(__name__)

#: Seconds between attempts while a backend is unavailable: doubling from the first to the
#: last, and back to the first once the processor has run longer than the last.
FIRST_RETRY = 0.5
LAST_RETRY = 5.0


def tune_gc() -> None:
    """Collect garbage less often: every batch allocates tens of thousands of containers
    (event properties, profile records) that die young, and each default collection of
    the older generations walks the whole engine's objects."""
    gc.set_threshold(50_000, 20, 100)


def run_processor(settings: Settings, stop: threading.Event | None = None) -> None:
    """Process events until stopped; backend outages are retried with backoff."""
    stop = stop or threading.Event()
    tune_gc()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    backends = open_backends(settings, migrate_catalog=True)
    watcher = CatalogWatcher(settings.catalog)
    try:
        config = ProcessorConfig(
            max_batch=settings.max_batch,
            snapshot_every=settings.snapshot_seconds,
            snapshots=settings.snapshot_dir,
            changes_topic=CHANGES if settings.changes_topic_on else None,
            changes_kept=settings.change_log_lines,
        )
        delay = FIRST_RETRY
        while not stop.is_set():
            started = time.monotonic()
            try:
                # Built anew each time: recovery starts from what the store committed.
                Processor(
                    backends.bus,
                    backends.store,
                    backends.catalog,
                    config,
                    watcher,
                    relay_ports=functools.partial(open_relay_ports, settings),
                ).run(stop)
            except (StoreUnavailable, BusUnavailable, CatalogUnavailable, Fenced) as exc:
                if time.monotonic() - started > LAST_RETRY:
                    delay = FIRST_RETRY  # it had recovered since the last outage
                log.warning("backend unavailable, retrying in %.1f s: %s", delay, exc)
                stop.wait(delay)
                delay = min(delay * 2, LAST_RETRY)
    finally:
        watcher.close()
        backends.close()
