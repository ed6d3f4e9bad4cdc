"""Tell a reader of the catalog when to read it again, so that it need not ask every loop.

On PostgreSQL every committed change is announced on :data:`CHANNEL` (a trigger on the
revision row, migration ``0002``, with the new revision as payload): a thread LISTENs on a
connection of its own and wakes the reader within milliseconds. What is announced while it
is not connected is lost, so every (re)connection asks for a full check, and a check is also
due every ``safety_every`` seconds whatever happens. SQLite announces nothing: a check is
due every ``poll_every`` seconds, a cheap revision read for the reader.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy import make_url

from audience_manager.catalog.database import CONNECT_TIMEOUT_SECONDS

__all__ = ["CHANNEL", "POLL_SECONDS", "SAFETY_SECONDS", "CatalogWatcher"]

log = logging.getLogger(__name__)

CHANNEL = "am_catalog"
"""The PostgreSQL notification channel of catalog changes."""

POLL_SECONDS = 0.25
"""How often a check is due where changes are not announced (SQLite)."""

SAFETY_SECONDS = 5.0
"""How often a check is due where they are (PostgreSQL), in case one was missed."""

_TICK_SECONDS = 0.2  # how soon the listening thread notices close()
_RETRY_SECONDS = (0.05, 0.5)  # first and longest pause between reconnection attempts
# Connection options: a link that died without a word (no reset) is noticed in ~25 seconds.
_OPTIONS = {
    "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


class CatalogWatcher:
    """Says when the catalog at ``url`` may have changed; :meth:`close` it after use.

    The first :meth:`changed` is always true: the reader has not looked yet.
    """

    def __init__(
        self,
        url: str,
        *,
        poll_every: float = POLL_SECONDS,
        safety_every: float = SAFETY_SECONDS,
    ) -> None:
        parsed = make_url(url)
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._due = time.monotonic()
        self._thread: threading.Thread | None = None
        if parsed.get_backend_name() != "postgresql":
            self._every = poll_every
            return
        self._every = safety_every
        conninfo = make_conninfo(
            parsed.set(drivername="postgresql").render_as_string(hide_password=False), **_OPTIONS
        )
        self._thread = threading.Thread(
            target=self._listen, args=(conninfo,), name="catalog-watcher", daemon=True
        )
        self._thread.start()

    def changed(self, timeout: float = 0.0) -> bool:
        """True when the catalog should be read again: a change was announced, the listener
        (re)connected, or the interval since the last true answer ran out.

        Waits up to ``timeout`` seconds for one of those. Read the catalog after a true
        answer, not before: what changes meanwhile makes the next answer true.
        """
        remaining = min(timeout, self._due - time.monotonic())
        if self._wake.wait(max(remaining, 0.0)) or time.monotonic() >= self._due:
            self._wake.clear()
            self._due = time.monotonic() + self._every
            return True
        return False

    def close(self) -> None:
        """Stop listening (within a fraction of a second) and close the connection."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join()

    def _listen(self, conninfo: str) -> None:
        pause, lost = _RETRY_SECONDS[0], False
        while not self._closed.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    if lost:
                        log.info("listening to catalog changes again")
                    pause, lost = _RETRY_SECONDS[0], False
                    self._wake.set()  # nothing was announced to us before this point
                    while not self._closed.is_set():
                        for notify in connection.notifies(timeout=_TICK_SECONDS):
                            log.debug("catalog revision %s committed", notify.payload)
                            self._wake.set()
            except psycopg.Error as error:
                if not lost:
                    log.warning("not listening to catalog changes, reconnecting: %s", error)
                lost = True
            self._closed.wait(pause)
            pause = min(pause * 2, _RETRY_SECONDS[1])
