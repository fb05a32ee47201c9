"""The lease keeper: renews the leases of the rows a live worker holds.

Borrowed from River's and Oban's "lifeline" idea the other way round: rows are
claimed under a short lease (``OPTIN_WORKER_LEASE_SECONDS``, 15 s) so the rows of a
worker that died (kill -9, a lost host) are due again within seconds, and a thread
of the live worker extends the lease of every row it still holds every
``OPTIN_WORKER_HEARTBEAT_SECONDS`` (5 s), so a slow relay never costs a live worker
its rows. The renewal runs on a connection of its own, outside any delivery's
transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import timedelta

from flask import Flask
from sqlalchemy import update

from optin.extensions import db
from optin.models import OutboxItem, OutboxStatus, utcnow

log = logging.getLogger(__name__)


class Held:
    """The ids of the rows this worker holds, shared by its threads."""

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._lock = threading.Lock()

    def add(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._ids.update(ids)

    def discard(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._ids.difference_update(ids)

    def snapshot(self) -> list[int]:
        with self._lock:
            return sorted(self._ids)


def renew(worker_id: str, ids: list[int], lease: timedelta) -> int:
    """Extend the lease of ``ids`` still held by ``worker_id``; return how many were renewed.

    On its own connection and transaction (``db.engine``), so it never commits a
    delivery's work and never waits for one's commit.
    """
    if not ids:
        return 0
    rows = OutboxItem.__table__
    with db.engine.begin() as conn:
        result = conn.execute(
            update(rows)
            .where(rows.c.id.in_(ids), rows.c.claimed_by == worker_id,
                   rows.c.status == OutboxStatus.PENDING)
            .values(claimed_until=utcnow() + lease))
    return int(result.rowcount or 0)


class Heartbeat:
    """A daemon thread renewing the held rows' leases until stopped."""

    def __init__(self, app: Flask, worker_id: str, held: Held, *, lease: timedelta,
                 every: float) -> None:
        self.app, self.worker_id, self.held = app, worker_id, held
        self.lease, self.every = lease, every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="optin-heartbeat",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def beat(self) -> int:
        """Renew once now (the thread's step; tests call it directly)."""
        with self.app.app_context():
            return renew(self.worker_id, self.held.snapshot(), self.lease)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.beat()
            except Exception:  # the database is away: the next beat tries again
                log.warning("could not renew the leases of %s held rows",
                            len(self.held.snapshot()), exc_info=True)
