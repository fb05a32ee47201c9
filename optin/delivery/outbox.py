"""The transactional outbox: claim, deliver, retry, dead letters.

Work (a mail, an ActiveCampaign call) is enqueued in the same transaction as
the state change that causes it (``OutboxItem.pending`` builds the row), so
a crash or an outage delays it but never drops it. Workers claim rows with a
lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so several workers share the
queue and a crashed worker's rows come back when its lease runs out. Delivery is at least once: handlers check
the subscription's current state and are written to be repeatable.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypedDict, cast

from flask import current_app
from sqlalchemy import (
    CursorResult,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import aliased

from optin.config import current_settings
from optin.delivery import intents
from optin.extensions import db
from optin.models import OutboxItem, OutboxKind, OutboxStatus, utcnow
from optin.ops import logs, metrics

log = logging.getLogger(__name__)

PENDING, DONE, DEAD = OutboxStatus.PENDING, OutboxStatus.DONE, OutboxStatus.DEAD
#: The default lease of a claimed row; the worker's heartbeat renews it (``heartbeat.py``).
LEASE = timedelta(seconds=15)
BACKOFF_BASE_SECONDS = 10.0
BACKOFF_CAP_SECONDS = 3600.0

Handler = Callable[[OutboxItem], None]
#: Where the app keeps its table of outbox kind -> handler (``optin.OUTBOX_HANDLERS``).
HANDLERS_EXTENSION = "optin.outbox_handlers"
#: Where the app keeps the kinds never made dead letters (``optin.OUTBOX_UNDYING``).
UNDYING_EXTENSION = "optin.outbox_undying"


class RetryLater(Exception):
    """A temporary failure; ``after`` (seconds) overrides the backoff, e.g. Retry-After."""

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


class PermanentFailure(Exception):
    """Retrying cannot help (invalid address, unknown list): make it a dead letter."""


class DestinationDown(RetryLater):
    """The destination failed, not the row (the relay refuses connections, ActiveCampaign
    answers 503): the row waits without spending an attempt, and the destination's circuit
    breaker counts the failure (``breaker.py``)."""

    def __init__(self, destination: str, message: str) -> None:
        super().__init__(message)
        self.destination = destination


#: Destinations a handler reached in the current delivery (see :func:`destination_reached`).
_REACHED: ContextVar[set[str] | None] = ContextVar("optin_outbox_reached", default=None)


def destination_reached(destination: str) -> None:
    """Say that the destination took a request (the relay a mail, ActiveCampaign a call):
    its breaker closes, if it was open, when this delivery ends."""
    reached = _REACHED.get()
    if reached is not None:
        reached.add(destination)


class Gate(Protocol):
    """What the worker's circuit breakers decide and learn (``breaker.Breakers``)."""

    def allows(self, kind: str) -> bool: ...

    def failed(self, destination: str, error: str) -> object: ...

    def succeeded(self, destination: str) -> None: ...


def claim(worker_id: str, limit: int = 20, now: datetime | None = None, *,
          lease: timedelta = LEASE, skip_kinds: Collection[str] = (),
          only_kinds: Collection[str] | None = None) -> list[int]:
    """Lease up to ``limit`` due rows to this worker and commit; return their ids.

    On PostgreSQL the candidates are locked with SKIP LOCKED so concurrent
    workers pick disjoint rows without waiting; the conditional UPDATE keeps it
    correct on SQLite, where writers are serialized anyway. ``skip_kinds`` leaves
    the rows of a paused destination (an open circuit breaker) where they are, and
    ``only_kinds`` takes just those (a breaker's probe).
    """
    now = now or utcnow()
    free = or_(OutboxItem.claimed_until.is_(None), OutboxItem.claimed_until < now)
    query = (select(OutboxItem.id)
             .where(OutboxItem.status == PENDING, OutboxItem.next_attempt_at <= now, free,
                    _first_of_its_key()))
    if skip_kinds:
        query = query.where(OutboxItem.kind.not_in(list(skip_kinds)))
    if only_kinds is not None:
        query = query.where(OutboxItem.kind.in_(list(only_kinds)))
    candidates = db.session.scalars(
        query.order_by(OutboxItem.next_attempt_at, OutboxItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not candidates:
        db.session.rollback()
        return []
    db.session.execute(
        update(OutboxItem)
        .where(OutboxItem.id.in_(candidates), OutboxItem.status == PENDING, free)
        .values(claimed_by=worker_id, claimed_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    claimed = db.session.scalars(
        select(OutboxItem.id)
        .where(OutboxItem.id.in_(candidates), OutboxItem.claimed_by == worker_id)
        .order_by(OutboxItem.next_attempt_at, OutboxItem.id)
    ).all()
    db.session.commit()
    return list(claimed)


def _first_of_its_key() -> Any:
    """A row with a serial key waits while an earlier row with that key is pending (due,
    claimed or backing off): rows of one key run one after another, in id order."""
    earlier = aliased(OutboxItem)
    # The status as a literal, not a parameter: the partial index of pending rows
    # (ix_outbox_pending_serial) then serves the probe in a cached generic plan too.
    return or_(OutboxItem.serial_key.is_(None),
               ~exists().where(earlier.serial_key == OutboxItem.serial_key,
                               earlier.status == literal_column(f"'{PENDING}'"),
                               earlier.id < OutboxItem.id))


def release(worker_id: str, ids: list[int], *, not_before: datetime | None = None) -> None:
    """Give back rows this worker claimed but did not finish (clean shutdown, a database
    error), due again at once or at ``not_before``."""
    if ids:
        values: dict[str, Any] = {"claimed_by": None, "claimed_until": None}
        if not_before is not None:
            values["next_attempt_at"] = not_before
        db.session.execute(
            update(OutboxItem)
            .where(OutboxItem.id.in_(ids), OutboxItem.claimed_by == worker_id)
            .values(**values)
        )
        db.session.commit()


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff with jitter: ~10 s, 20 s, 40 s … capped at an hour."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


# What a handler did outside the database (a mail that left) and must be on record even
# if the row's own transaction fails after it: see :func:`keep_if_rolled_back`.
_KEPT: ContextVar[list[Callable[[], None]] | None] = ContextVar("optin_outbox_kept", default=None)
KEEP_ATTEMPTS = 4


def keep_if_rolled_back(record: Callable[[], None]) -> None:
    """Register how to record, in a transaction of its own, something the handler did that
    cannot be undone (a mail handed to the relay), should the row's transaction fail.

    The work has then been done: the record is written together with the row's ``done``
    mark, so a live worker never sends the mail again after a database blip. Only a crash
    between the send and that record can still send a mail twice, and a mail that left is
    never missing from the proof: the record is tried a few times over a short blip, and
    logged (no address) if even that fails, leaving the row to be delivered again.
    """
    kept = _KEPT.get()
    if kept is not None:
        kept.append(record)


def _record_kept(item_id: int) -> bool:
    """Write what the failed delivery kept, and mark its row done; False if nothing was kept
    (or it could not be written)."""
    kept = _KEPT.get() or []
    if not kept:
        return False
    records = list(kept)
    kept.clear()
    for attempt in range(1, KEEP_ATTEMPTS + 1):
        try:
            for record in records:
                record()
            db.session.execute(_MARK_DONE, {"item_id": item_id, "now": utcnow()})
            db.session.commit()
            return True
        except Exception:
            db.session.rollback()
            if attempt == KEEP_ATTEMPTS:
                log.exception("could not record what a failed delivery already did")
                return False
            time.sleep(0.1 * 2 ** attempt)
    return False


def deliver(item_id: int, worker_id: str, *, max_attempts: int, horizon: timedelta,
            gate: Gate | None = None, settle: bool = True) -> str:
    """Run the handler for one claimed row in its own transaction; return the outcome.

    With a ``gate`` (the worker's circuit breakers), a row whose destination is paused is
    handed back untouched (``"paused"``), and what the handler met is reported to it: a
    :class:`DestinationDown` counts as the destination's failure, a reached destination
    as its success. ``settle=False`` skips looking for intents a crashed delivery left,
    for a caller that looked for the whole batch at once (``intents.left_over``).

    The handler's database writes and the row's ``done`` mark commit together.
    On failure they roll back and only the failure is recorded, unless the handler
    kept a record of work that cannot be undone (see :func:`keep_if_rolled_back`): then
    that record and the done mark are written instead. A database error escapes, after
    the kept records were written.
    """
    if settle:  # what a delivery before a crash may have sent (the worker asks per batch)
        intents.settle(item_id)
    item = db.session.get(OutboxItem, item_id, with_for_update=True)
    if item is None or item.status != PENDING or item.claimed_by != worker_id:
        db.session.rollback()
        return "skipped"
    if gate is not None and not gate.allows(item.kind):
        db.session.rollback()
        release(worker_id, [item_id])
        return PAUSED
    token, reached, row = _KEPT.set([]), _REACHED.set(set()), intents.CURRENT_ROW.set(item_id)
    enqueued = ENQUEUED_AT.set(item.created_at)
    down: DestinationDown | None = None
    try:
        with logs.context(outbox_id=item_id, outbox_kind=item.kind):
            outcome = _run(item, max_attempts=max_attempts, horizon=horizon)
        down = _DOWN.get()
        return outcome
    except Exception:
        db.session.rollback()
        _record_kept(item_id)
        raise
    finally:
        met = _REACHED.get() or set()
        _KEPT.reset(token)
        _REACHED.reset(reached)
        intents.CURRENT_ROW.reset(row)
        ENQUEUED_AT.reset(enqueued)
        _DOWN.set(None)
        if gate is not None:
            _report(gate, met, down)


def _report(gate: Gate, reached: set[str], down: DestinationDown | None) -> None:
    """Tell the breakers; their bookkeeping never fails a delivery that is already done."""
    try:
        for destination in reached:
            gate.succeeded(destination)
        if down is not None:
            gate.failed(down.destination, str(down))
    except Exception:
        log.warning("could not record a destination's state", exc_info=True)


PAUSED = "paused"
#: When the row being delivered was enqueued (for the time-to-send histogram).
ENQUEUED_AT: ContextVar[datetime | None] = ContextVar("optin_outbox_enqueued", default=None)


def waiting_reason(item: OutboxItem, now: datetime, paused: Collection[str]) -> str:
    """Why a pending row has not gone yet, for ``optin outbox list``: its destination's
    breaker, a worker's lease, its backoff, or nothing (due: the next claim takes it)."""
    if item.status != PENDING:
        return ""
    if item.kind in paused:
        return "breaker open"
    if item.claimed_until is not None and item.claimed_until > now:
        return f"leased by {item.claimed_by} until {item.claimed_until:%H:%M:%S}"
    never = " (failing; never given up)" if item.attempts and undying(item.kind) else ""
    if item.next_attempt_at > now:
        return f"backoff until {item.next_attempt_at:%Y-%m-%d %H:%M:%S}{never}"
    return f"due{never}"
#: The destination failure of the current delivery, for the gate (set by ``_run``).
_DOWN: ContextVar[DestinationDown | None] = ContextVar("optin_outbox_down", default=None)


def _run(item: OutboxItem, *, max_attempts: int, horizon: timedelta) -> str:
    item_id = item.id
    handlers: Mapping[OutboxKind, Handler] = current_app.extensions[HANDLERS_EXTENSION]
    fn = handlers.get(item.kind)  # type: ignore[call-overload]  # a str from the table
    try:
        if fn is None:
            raise PermanentFailure(f"no handler for outbox kind {item.kind!r}")
        fn(item)
    except Exception as exc:  # every failure is recorded, none escapes the worker
        db.session.rollback()
        if _record_kept(item_id):  # the mail left before the failure: its work is done
            return DONE
        if isinstance(exc, DestinationDown):
            _DOWN.set(exc)
            return _record_paused(item_id, exc, horizon=horizon)
        return _record_failure(item_id, exc, max_attempts=max_attempts, horizon=horizon)
    db.session.execute(_MARK_DONE, {"item_id": item_id, "now": utcnow()})
    db.session.commit()
    return DONE


_ROWS = OutboxItem.__table__
# A plain UPDATE built once: the ORM's unit of work cost more CPU than the database did.
_MARK_DONE = _ROWS.update().where(_ROWS.c.id == bindparam("item_id")).values(
    status=DONE, attempts=_ROWS.c.attempts + 1, last_error=None, claimed_by=None,
    claimed_until=None, finished_at=bindparam("now", type_=_ROWS.c.finished_at.type))


def mark_done(ids: Collection[int]) -> None:
    """Mark these rows done in one statement, in the caller's transaction (a group's sends)."""
    if ids:
        db.session.execute(
            _ROWS.update().where(_ROWS.c.id.in_(list(ids))).values(
                status=DONE, attempts=_ROWS.c.attempts + 1, last_error=None, claimed_by=None,
                claimed_until=None, finished_at=utcnow()))


def _describe(exc: Exception) -> str:
    """A failure as its row keeps it, with every address, IP and secret replaced by its
    pseudonym, as the log lines show it: ``optin outbox list`` and the operator API show
    it, and a queued request's handler (signup, click, withdrawal) may fail with a message
    naming what the request carried."""
    return logs.scrubber(current_settings())(f"{type(exc).__name__}: {exc}")[:2000]


def _record_failure(item_id: int, exc: Exception, *, max_attempts: int, horizon: timedelta) -> str:
    item = db.session.get(OutboxItem, item_id, with_for_update=True)
    if item is None:
        db.session.rollback()
        return "skipped"
    outcome, kind = apply_failure(item, exc, max_attempts=max_attempts, horizon=horizon), item.kind
    db.session.commit()
    if outcome == DEAD:
        metrics.dead_letter(kind)
    return outcome


def undying(kind: str) -> bool:
    """Whether rows of this kind are never given up (a queued withdrawal: losing it would
    mail someone who left): past the attempts and horizon they keep their backoff, an
    hour at most, and count as overdue (``optin_outbox_overdue_total``) instead of dying."""
    return kind in current_app.extensions.get(UNDYING_EXTENSION, ())


def apply_failure(item: OutboxItem, exc: Exception, *, max_attempts: int,
                  horizon: timedelta) -> str:
    """Count the failed attempt on the (locked) row in the caller's transaction: backoff, or
    a dead letter; return ``"retry"`` or ``"dead"``. The caller commits (a group commits the
    failures of its rows together with its neighbours' sends, ``groups.py``)."""
    now = utcnow()
    item.attempts += 1
    item.last_error = _describe(exc)
    item.claimed_by = item.claimed_until = None
    expired = now - item.created_at > horizon or item.attempts >= max_attempts
    if (isinstance(exc, PermanentFailure) or expired) and undying(item.kind):
        delay = backoff_seconds(item.attempts)
        item.next_attempt_at = now + timedelta(seconds=delay)
        metrics.overdue(item.kind)
        log.error("outbox %s (%s) failed %s times and is never given up: retry in %.0fs: %s",
                  item.id, item.kind, item.attempts, delay, item.last_error)
        return "retry"
    if isinstance(exc, PermanentFailure) or expired:
        item.status = DEAD
        item.finished_at = now
        log.error("outbox %s (%s) is a dead letter: %s", item.id, item.kind, item.last_error)
        return DEAD
    after = exc.after if isinstance(exc, RetryLater) and exc.after is not None else None
    delay = after if after is not None else backoff_seconds(item.attempts)
    item.next_attempt_at = now + timedelta(seconds=delay)
    level = logging.WARNING if isinstance(exc, RetryLater) else logging.ERROR
    log.log(level, "outbox %s (%s) attempt %s failed, retry in %.0fs: %s",
            item.id, item.kind, item.attempts, delay, item.last_error,
            # The exception itself: a group records its rows' failures after its loop,
            # where sys.exc_info() is empty (the log said "NoneType: None").
            exc_info=None if isinstance(exc, RetryLater | PermanentFailure) else exc)
    return "retry"


#: A row whose destination failed is due again after this (the breaker, once open,
#: keeps claims off its rows meanwhile); a failed probe's row goes behind the others.
PAUSE_SECONDS = 1.0


def _record_paused(item_id: int, exc: DestinationDown, *, horizon: timedelta) -> str:
    """The destination failed: the row waits, its attempts untouched (only the retry horizon
    still ends it, so a destination gone for good leaves dead letters, not a silent queue)."""
    item = db.session.get(OutboxItem, item_id, with_for_update=True)
    if item is None:
        db.session.rollback()
        return "skipped"
    outcome, kind = apply_paused(item, exc, horizon=horizon), item.kind
    db.session.commit()
    if outcome == DEAD:
        metrics.dead_letter(kind)
    return outcome


def apply_paused(item: OutboxItem, exc: DestinationDown, *, horizon: timedelta) -> str:
    """:func:`_record_paused` on the (locked) row in the caller's transaction; the caller
    commits. Returns ``"waiting"`` or ``"dead"``."""
    now = utcnow()
    item.last_error = _describe(exc)
    item.claimed_by = item.claimed_until = None
    if now - item.created_at > horizon and not undying(item.kind):
        item.status, item.finished_at = DEAD, now
        log.error("outbox %s (%s) is a dead letter: its destination failed for longer than "
                  "the retry horizon: %s", item.id, item.kind, item.last_error)
        return DEAD
    item.next_attempt_at = now + timedelta(seconds=PAUSE_SECONDS)
    log.warning("outbox %s (%s) waits for %s: %s", item.id, item.kind, exc.destination,
                item.last_error)
    return "waiting"


def retry_dead(ids: list[int] | None = None) -> int:
    """Put dead letters back in the queue after the cause was fixed."""
    query = update(OutboxItem).where(OutboxItem.status == DEAD)
    if ids:
        query = query.where(OutboxItem.id.in_(ids))
    result = cast(CursorResult[Any], db.session.execute(
        query.values(status=PENDING, next_attempt_at=utcnow(), finished_at=None, attempts=0)
    ))
    db.session.commit()
    return result.rowcount or 0


def items(status: str | None = None, limit: int = 100) -> list[OutboxItem]:
    query = select(OutboxItem).order_by(OutboxItem.id.desc()).limit(limit)
    if status:
        query = query.where(OutboxItem.status == status)
    return list(db.session.scalars(query))


@dataclass(frozen=True)
class KindBacklog:
    """The queue of one outbox kind: rows waiting (and how many are due), dead letters,
    and when the oldest waiting row was enqueued."""

    kind: str
    pending: int
    due: int
    dead: int
    oldest_pending: datetime | None
    #: when the longest-due waiting row became due (how far the workers lag behind)
    oldest_due: datetime | None = None


class Backlog(TypedDict):
    """The whole queue, as health checks and the operator API show it (``BacklogSchema``)."""

    pending: int
    due: int
    dead: int
    oldest_pending_age_seconds: float


def backlog_by_kind(now: datetime | None = None) -> list[KindBacklog]:
    """Depth, due rows, age and dead letters per kind, in one query: what ``/metrics``
    exports (the app factory hands this to ``ops.metrics``) and what :func:`backlog` sums."""
    now = now or utcnow()
    waiting = OutboxItem.status == PENDING
    rows = db.session.execute(
        select(OutboxItem.kind,
               func.count().filter(waiting),
               func.count().filter(and_(waiting, OutboxItem.next_attempt_at <= now)),
               func.count().filter(OutboxItem.status == DEAD),
               func.min(OutboxItem.created_at).filter(waiting),
               func.min(OutboxItem.next_attempt_at).filter(
                   and_(waiting, OutboxItem.next_attempt_at <= now)))
        .where(OutboxItem.status.in_((PENDING, DEAD)))
        .group_by(OutboxItem.kind).order_by(OutboxItem.kind)
    ).all()
    found = []
    for kind, pending, due, dead, oldest, oldest_due in rows:
        if oldest is not None and oldest.tzinfo is None:  # SQLite's aggregate returns naive UTC
            oldest = oldest.replace(tzinfo=now.tzinfo)
        if oldest_due is not None and oldest_due.tzinfo is None:
            oldest_due = oldest_due.replace(tzinfo=now.tzinfo)
        found.append(KindBacklog(kind, pending, due, dead, oldest, oldest_due))
    return found


def backlog(now: datetime | None = None) -> Backlog:
    """Depth and age of the whole queue, and the dead letters."""
    now = now or utcnow()
    kinds = backlog_by_kind(now)
    oldest = min((k.oldest_pending for k in kinds if k.oldest_pending is not None), default=None)
    return {
        "pending": sum(k.pending for k in kinds),
        "due": sum(k.due for k in kinds),
        "dead": sum(k.dead for k in kinds),
        "oldest_pending_age_seconds": (now - oldest).total_seconds() if oldest else 0.0,
    }
