"""Circuit breakers per destination (the SMTP relay, ActiveCampaign), shared by all workers.

After ``OPTIN_BREAKER_FAILURES`` consecutive failures of a destination (the relay
refuses or drops connections or greets with an error, ActiveCampaign answers 5xx or
not at all) the destination is *open*: its rows stay in the outbox without spending
attempts, claims pass them by, and once every ``OPTIN_BREAKER_PROBE_SECONDS`` one
worker, whichever takes the turn first, sends one row as a probe. A probe that goes
through closes the breaker and every worker takes the backlog at once, at the
destination's own pace (its connections, ActiveCampaign's throttle).

The state is a ``job_state`` row per destination (``breaker:<name>``), changed in short
transactions of its own under the row's lock, so several workers on several hosts
agree on it and on whose turn the probe is. Each process keeps the last state it read
or wrote, so a healthy destination costs no write per row: only a change is written.
This is Solid Queue's and Oban's idea of a paused queue, decided by failures instead
of by an operator.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from optin.delivery.notifier import notify
from optin.models import JobState, utcnow

log = logging.getLogger(__name__)

CLOSED, OPEN = "closed", "open"
PREFIX = "breaker:"


@dataclass
class BreakerState:
    """What the row says about one destination."""

    destination: str
    state: str = CLOSED
    failures: int = 0
    opened_at: datetime | None = None
    probe_at: datetime | None = None
    probes: int = 0
    last_error: str | None = None

    @classmethod
    def load(cls, destination: str, value: Mapping[str, Any]) -> BreakerState:
        def when(key: str) -> datetime | None:
            raw = value.get(key)
            return datetime.fromisoformat(raw) if raw else None

        return cls(destination, value.get("state") or CLOSED, int(value.get("failures") or 0),
                   when("opened_at"), when("probe_at"), int(value.get("probes") or 0),
                   value.get("last_error"))

    def dump(self) -> dict[str, Any]:
        return {"state": self.state, "failures": self.failures,
                "opened_at": self.opened_at.isoformat() if self.opened_at else None,
                "probe_at": self.probe_at.isoformat() if self.probe_at else None,
                "probes": self.probes, "last_error": self.last_error}

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    @property
    def clean(self) -> bool:
        return self.state == CLOSED and self.failures == 0


@dataclass
class Breakers:
    """This process's view of the destinations' breakers, and the changes it makes."""

    engine: Engine
    #: outbox kind -> destination name (kinds not named have no breaker)
    destinations: Mapping[str, str]
    threshold: int = 5
    probe_interval: timedelta = timedelta(seconds=5)
    known: dict[str, BreakerState] = field(default_factory=dict)
    #: destinations whose probe turn this process took and has not used yet
    _probes: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def kinds_of(self, destination: str) -> list[str]:
        return sorted(k for k, d in self.destinations.items() if d == destination)

    # -- reading ----------------------------------------------------------------------

    def refresh(self) -> dict[str, BreakerState]:
        """Read every breaker's row (one query); what claims and the gate go by."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(JobState.name, JobState.value)
                                .where(JobState.name.startswith(PREFIX))).all()
        states = {name[len(PREFIX):]: BreakerState.load(name[len(PREFIX):], value or {})
                  for name, value in rows}
        with self._lock:
            self.known = states
        return states

    def open_destinations(self) -> list[str]:
        with self._lock:
            return sorted(d for d, s in self.known.items() if s.is_open)

    def allows(self, kind: str) -> bool:
        """May a row of ``kind`` be delivered now? Not while its destination is open, unless
        it is the probe this process won the turn for (the first such row takes it)."""
        destination = self.destinations.get(kind)
        if destination is None:
            return True
        with self._lock:
            state = self.known.get(destination)
            if state is None or not state.is_open:
                return True
            if destination in self._probes:
                self._probes.discard(destination)
                return True
            return False

    # -- changing ---------------------------------------------------------------------

    def take_probe(self, destination: str, now: datetime | None = None) -> bool:
        """Take the destination's probe turn if it is due; True for exactly one caller."""
        now = now or utcnow()

        def change(state: BreakerState) -> bool:
            if not state.is_open or (state.probe_at is not None and state.probe_at > now):
                return False
            state.probe_at = now + self.probe_interval
            state.probes += 1
            return True

        taken = self._change(destination, change)
        if taken:
            with self._lock:
                self._probes.add(destination)
            log.info("breaker %s: probing the destination", destination)
        return taken

    def failed(self, destination: str, error: str) -> BreakerState:
        """Count a failure of the destination; open the breaker at the threshold."""
        now = utcnow()

        def change(state: BreakerState) -> bool:
            state.failures += 1
            state.last_error = error[:300]
            if not state.is_open and state.failures >= self.threshold:
                state.state, state.opened_at = OPEN, now
                state.probe_at, state.probes = now + self.probe_interval, 0
                log.warning("breaker %s opened after %s consecutive failures; one probe every "
                            "%.0f s until it answers", destination, state.failures,
                            self.probe_interval.total_seconds())
            return True

        self._change(destination, change)
        with self._lock:
            self._probes.discard(destination)
            return self.known[destination]

    def succeeded(self, destination: str) -> None:
        """The destination took a row: close its breaker (written only if it was not clean)."""
        with self._lock:
            state = self.known.get(destination)
            if state is None or state.clean:
                return

        def change(state: BreakerState) -> bool:
            if state.clean:
                return False
            if state.is_open:
                log.warning("breaker %s closed: the probe went through after %s failures",
                            destination, state.failures)
            state.state, state.failures, state.opened_at = CLOSED, 0, None
            state.probe_at, state.last_error = None, None
            return True

        self._change(destination, change, notify_on_change=True)

    def _change(self, destination: str, change: Any, notify_on_change: bool = False) -> bool:
        """Apply ``change`` to the destination's state under its row lock, in a transaction of
        its own; keep the result as this process's view. Returns what ``change`` returned."""
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    state = self._locked(conn, destination)
                    changed = bool(change(state))
                    if changed:
                        conn.execute(update(JobState).where(JobState.name == PREFIX + destination)
                                     .values(value=state.dump(), updated_at=utcnow()))
                        if notify_on_change:  # idle workers take the backlog at once
                            notify(conn)
                with self._lock:
                    self.known[destination] = state
                return changed
            except IntegrityError:  # another process created the row first: use it
                continue
        raise RuntimeError(f"could not change the breaker of {destination}")

    @staticmethod
    def _locked(conn: Connection, destination: str) -> BreakerState:
        name = PREFIX + destination
        # Writing first takes the lock: the row on PostgreSQL, the database on SQLite.
        locked = conn.execute(update(JobState).where(JobState.name == name)
                              .values(name=name)).rowcount
        if not locked:
            conn.execute(insert(JobState).values(name=name, value=BreakerState(destination)
                                                 .dump(), updated_at=utcnow()))
            return BreakerState(destination)
        value = conn.execute(select(JobState.value).where(JobState.name == name)).scalar_one()
        return BreakerState.load(destination, value or {})


def states() -> list[BreakerState]:
    """Every destination's breaker as the database has it (``/metrics``, ``optin outbox``)."""
    from optin.extensions import db

    rows = db.session.execute(select(JobState.name, JobState.value)
                              .where(JobState.name.startswith(PREFIX))).all()
    return [BreakerState.load(name[len(PREFIX):], value or {}) for name, value in rows]
