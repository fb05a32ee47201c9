"""One shared pace for ActiveCampaign calls, so all workers together stay under its limit.

ActiveCampaign allows 5 requests per second per account and counts them over
a sliding second. Every process that calls it (several workers, the CLI's
backfill and reconcile) takes turns from one shared schedule: a call reserves
the next free slot, ``1 / rate`` seconds after the previous reservation, and
sleeps until its slot comes (GCRA without a burst allowance). Slots are
evenly spaced: at the default 4/s six consecutive calls span 1.25 s, so
only a call delayed by more than 0.25 s between its slot and its arrival
could put six into one of the server's seconds (4.5/s left 0.11 s, which a
busy 2-core machine exceeded now and then; a 429 is retried, but it should
not happen in normal operation).

The schedule lives in Redis when ``OPTIN_RATELIMIT_STORAGE_URL`` names one
(any form the rate limiter takes: a server, a socket, sentinels or a cluster;
one Lua script on Redis's own clock), otherwise in the database
(a row in ``job_state``, updated on its own connection: the row lock on
PostgreSQL, the single-writer lock on SQLite keep the read-modify-write
atomic; PostgreSQL's clock is used so hosts need not agree on the time).

Why not the ``limits`` package the rate limits count with: its moving window only
answers "allowed or not", so callers would poll; it admits a whole window at
once (a burst of 5 whose tail can land in the server's next window); and it
has no database storage, which SQLite and PostgreSQL-only deployments need.
The slot schedule is a dozen lines per backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from optin.config import SharedStorage
from optin.models import JobState, utcnow
from optin.ops.ratelimits import redis_client

log = logging.getLogger(__name__)

# A stored slot further ahead than this is stale (a changed rate, a clock jump): start afresh.
STALE_SECONDS = 60.0
_WARN_EVERY = 60.0
_LATE_RETRIES = 5


class Throttle:
    """Call it before each request; it sleeps until this caller's turn."""

    def __init__(self, rate: float, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0:
            raise ValueError("rate must be above 0")
        self.interval = 1.0 / rate
        # A caller that wakes up later than this after its slot (a busy CPU, a GC pause)
        # would crowd the calls after it into one of the server's seconds: it gives the
        # slot up and takes a new one instead.
        self.tolerance = self.interval / 4
        self._sleep = sleep
        self._clock = clock
        self._last_warning = 0.0

    def reserve(self) -> float:
        """Take the next slot; return how many seconds until it starts."""
        raise NotImplementedError

    def __call__(self) -> None:
        for _ in range(_LATE_RETRIES):
            try:
                wait = self.reserve()
            except Exception as exc:  # a limiter outage must not stop the sync; 429s are retried
                now = self._clock()
                if now - self._last_warning > _WARN_EVERY:
                    self._last_warning = now
                    log.warning("ActiveCampaign throttle unavailable (%s); calling unpaced",
                                type(exc).__name__)
                return
            due = self._clock() + max(wait, 0.0)
            if wait > 0:
                self._sleep(wait)
            if self._clock() - due <= self.tolerance:
                return
        log.warning("ActiveCampaign throttle: woke up late %d times in a row; calling now",
                    _LATE_RETRIES)


class RedisThrottle(Throttle):
    """The schedule as one Redis key holding the next free slot (Redis server time).

    ``connect`` makes the client on first use (a cluster client contacts its nodes
    when made), so a Redis that is down at start-up is an outage like a later one.
    """

    # Returns a string: Redis would truncate a Lua number to an integer.
    SCRIPT = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    local interval = tonumber(ARGV[1])
    local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
    if slot < now or slot > now + tonumber(ARGV[2]) then slot = now end
    redis.call('SET', KEYS[1], string.format('%.6f', slot + interval),
               'PX', math.ceil((slot + interval - now) * 1000) + 1000)
    return string.format('%.6f', slot - now)
    """

    def __init__(self, connect: Callable[[], Any], key: str, rate: float, **kw: Any) -> None:
        super().__init__(rate, **kw)
        self.key = key
        self._connect = connect
        self._script: Any = None

    def reserve(self) -> float:
        if self._script is None:
            self._script = self._connect().register_script(self.SCRIPT)
        return float(self._script(keys=[self.key], args=[self.interval, STALE_SECONDS]))


class DatabaseThrottle(Throttle):
    """The schedule as a ``job_state`` row, changed in a short transaction of its own.

    Its own connection matters: the caller is usually inside an outbox
    transaction holding a subscription's row lock, which must not commit here.
    """

    def __init__(self, engine: Engine, key: str, rate: float, **kw: Any) -> None:
        super().__init__(rate, **kw)
        self.engine = engine
        self.key = key
        self._table = JobState.__table__

    def reserve(self) -> float:
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    return self._reserve(conn)
            except IntegrityError:  # another process created the row first: use it
                continue
        raise RuntimeError("could not create the throttle row")

    def _now(self, conn: Any) -> float:
        if conn.dialect.name == "postgresql":
            return float(conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar())
        return time.time()

    def _reserve(self, conn: Any) -> float:
        row = self._table.c
        # Writing first takes the lock: the row on PostgreSQL, the database on SQLite.
        locked = conn.execute(
            update(self._table).where(row.name == self.key).values(name=self.key)
        ).rowcount
        now = self._now(conn)
        if not locked:
            conn.execute(insert(self._table).values(
                name=self.key, value={"next_at": now + self.interval}, updated_at=utcnow()))
            return 0.0
        value = conn.execute(select(row.value).where(row.name == self.key)).scalar_one() or {}
        slot = float(value.get("next_at") or 0.0)
        if slot < now or slot > now + STALE_SECONDS:
            slot = now
        conn.execute(update(self._table).where(row.name == self.key)
                     .values(value={"next_at": slot + self.interval}))
        return slot - now


def shared_throttle(storage: SharedStorage | None, engine: Engine, account: str,
                    rate: float) -> Throttle:
    """The throttle for one ActiveCampaign account: in the Redis the rate limits use
    (``settings.shared_storage``), or in the database when they count in memory."""
    if storage is None:
        return DatabaseThrottle(engine, f"ac-throttle:{account}"[:100], rate)
    return RedisThrottle(lambda: redis_client(storage), f"optin:ac-throttle:{account}", rate)
