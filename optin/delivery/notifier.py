"""The notifier: wakes idle workers when new work commits (PostgreSQL ``LISTEN/NOTIFY``).

An insert into ``outbox`` fires ``NOTIFY optin_outbox`` (a statement trigger, migration
0005), which PostgreSQL delivers when the inserting transaction commits, so a
worker waiting for work starts within milliseconds of a signup's commit, whichever code
enqueued it. A breaker that closes notifies too, so every worker takes the backlog at
once. The listener is one connection per worker, in a thread of its own; should it
fail, the worker falls back to polling every ``OPTIN_WORKER_POLL_SECONDS`` and the
listener connects again. On SQLite there is nothing to listen to: the worker polls.
This is Oban's and graphile-worker's notifier, a few dozen lines on psycopg 3.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

CHANNEL = "optin_outbox"
RECONNECT_SECONDS = 2.0


def notify(conn: Connection) -> None:
    """Wake the workers when ``conn``'s transaction commits (nothing on SQLite)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


class Notifier:
    """``wait(timeout)`` returns early when work was enqueued (or :meth:`wake` was called)."""

    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine if engine is not None and engine.dialect.name == "postgresql" \
            else None
        self._event = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()

    def start(self) -> None:
        if self.engine is not None and self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="optin-notifier",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._event.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Sleep until woken or ``timeout``; True if woken."""
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def _listen(self) -> None:
        assert self.engine is not None
        while not self._stop.is_set():
            raw: Any = None
            try:
                raw = self.engine.raw_connection()
                conn = raw.driver_connection
                conn.autocommit = True
                conn.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                self._event.set()  # anything enqueued while not listening is looked at now
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=1.0):
                        self._event.set()
            except Exception:
                self.listening.clear()
                log.warning("LISTEN %s failed; polling until it is back", CHANNEL,
                            exc_info=True)
                self._stop.wait(RECONNECT_SECONDS)
            finally:
                if raw is not None:
                    with contextlib.suppress(Exception):  # already gone
                        raw.invalidate()  # a LISTENing connection goes back to no pool
