"""Run the processor service (``run_processor``) in a thread, and wait for what it does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from audience_manager.config import Settings
from audience_manager.processor.service import run_processor


@contextmanager
def processor_thread(settings: Settings) -> Iterator[None]:
    """The processor as its own process would run it, stopped when the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=run_processor, args=(settings, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the processor did not stop"


def seconds_until(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until ``condition()`` holds (checked every 5 ms); fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not true within {timeout} s"
        time.sleep(0.005)
    return time.monotonic() - start
