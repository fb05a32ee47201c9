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
    """``wait(timeout)`` returns early when work was enqueued (or :meth:`wake` was called).

    Every wake-up reaches every waiter: each delivery thread of a worker waits on it
    (``wait(timeout, since=generation())``), and a NOTIFY that arrives between a thread's
    empty claim and its wait is not lost, for the wait compares generations. Without
    ``since`` it is one consumer's event, set until that consumer's next wait returns.
    """

    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine if engine is not None and engine.dialect.name == "postgresql" \
            else None
        self._cond = threading.Condition()
        self._generation = 0
        self._consumed = 0
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
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wake(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def generation(self) -> int:
        """How many wake-ups there have been: pass it to :meth:`wait` as ``since``."""
        with self._cond:
            return self._generation

    def wait(self, timeout: float, since: int | None = None) -> bool:
        """Sleep until a wake-up after ``since`` (without it: after this method last
        returned) or ``timeout``; True if woken."""
        with self._cond:
            mark = self._consumed if since is None else since
            woken = self._cond.wait_for(lambda: self._generation != mark, timeout)
            if since is None:
                self._consumed = self._generation
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
                self.wake()  # anything enqueued while not listening is looked at now
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=1.0):
                        self.wake()
            except Exception:
                self.listening.clear()
                log.warning("LISTEN %s failed; polling until it is back", CHANNEL,
                            exc_info=True)
                self._stop.wait(RECONNECT_SECONDS)
            finally:
                if raw is not None:
                    with contextlib.suppress(Exception):  # already gone
                        raw.invalidate()  # a LISTENing connection goes back to no pool
