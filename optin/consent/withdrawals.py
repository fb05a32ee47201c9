"""Withdrawals that never wait on (or are lost to) a mail delivery holding the subscription.

A worker's delivery group (``delivery/groups.py``) holds its subscriptions' row locks on
PostgreSQL while it sends, and one send to a hung relay can take the SMTP timeout (30 s),
which is gunicorn's: a withdrawal waiting for that lock would be killed with its worker
and lost. So every withdrawal a request makes (the unsubscribe page's button, RFC 8058
one-click, the ActiveCampaign webhook) goes like this:

1. the request bounds its lock waits (``SET LOCAL lock_timeout``,
   ``OPTIN_WITHDRAWAL_LOCK_WAIT_SECONDS``, 2 s) and withdraws under the row lock as before;
2. if the lock is not free in time, it rolls back and commits a queued withdrawal instead:
   an outbox row of kind ``withdrawal_intake`` carrying what the request saw (its time,
   IP, user agent, origin; the link's nonce already checked against an unlocked read),
   without touching the subscription row. It answers exactly as if it had withdrawn;
3. the worker's handler (:func:`process`) takes the lock as soon as the group frees it and
   withdraws with the request's time, IP and user agent (ledger event, suppression, the
   ActiveCampaign unsubscribe, the goodbye mail if the list sends one). The same
   transaction blanks the row's payload, so the IP and user agent live in it only while
   it waits.

While a withdrawal waits, the promises hold for it too:
- no mail leaves for the subscription but the goodbye: a delivery group reads the queued
  withdrawals of its subscriptions with its preload (one statement per group, and again
  before a send only when the group has been out longer than the lock wait) and sends
  nothing for them (:func:`pending`);
- the unsubscribe page says unsubscribed (``web/links.py`` asks :func:`pending`);
- it is applied once: whoever next holds the lock (the worker, a repeated unsubscribe, an
  erasure) applies the earliest queued request first (:func:`apply_queued`); later ones,
  and repeats while it waits, add nothing (one withdrawal event);
- an erasure applies it before it erases (the ledger keeps the order things happened in),
  and marks the rows processed, their payloads blanked: nothing personal outlives it, and
  a row applied later finds the subscription withdrawn and changes nothing.

Rows of one subscription share a serial key, so workers run them one after another.
SQLite has no row locks: there every withdrawal is applied at once, as before.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict, TypeVar

from sqlalchemy import JSON, String, cast, literal, select, type_coerce, update
from sqlalchemy import text as sql_text
from sqlalchemy.exc import DBAPIError

from optin.config import current_settings
from optin.consent import ledger, mailcopies, signups, subscriptions
from optin.consent import queued as queued_requests
from optin.consent.subscriptions import Client, UnsubscribeOutcome
from optin.extensions import db
from optin.models import (
    ACTIVE_STATUSES,
    ConsentEvent,
    EventKind,
    OutboxItem,
    OutboxKind,
    OutboxStatus,
    Subscription,
    utcnow,
)
from optin.ops import logs

log = logging.getLogger(__name__)

KIND = OutboxKind.WITHDRAWAL_INTAKE
#: The payload of a queued withdrawal once applied (or found moot): nothing personal.
PROCESSED = queued_requests.PROCESSED
#: PostgreSQL's SQLSTATE for ``lock_timeout`` expired (lock_not_available).
LOCK_NOT_AVAILABLE = "55P03"
_ROWS = OutboxItem.__table__
_WAITING = (OutboxStatus.PENDING, OutboxStatus.DEAD)
SERIAL_PREFIX = "withdrawal:"
T = TypeVar("T")


@dataclass(frozen=True)
class Withdrawal:
    """What a request asks to record, as the ledger will show it: its own time and client."""

    origin: str
    client: Client
    at: datetime
    kind: EventKind = EventKind.UNSUBSCRIBED
    details: dict[str, Any] = field(default_factory=dict)

    #: an erasure (Art. 17) of the subscription, not only a withdrawal (:func:`erase`)
    erase: bool = False

    def payload(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "origin": self.origin, "kind": str(self.kind),
                "ip": self.client.ip, "user_agent": self.client.user_agent,
                "details": self.details, "request_id": logs.request_id(),
                **({"erase": True} if self.erase else {})}

    @classmethod
    def of(cls, payload: dict[str, Any]) -> Withdrawal:
        return cls(origin=payload["origin"],
                   client=Client(ip=payload.get("ip"), user_agent=payload.get("user_agent")),
                   at=datetime.fromisoformat(payload["at"]), kind=EventKind(payload["kind"]),
                   details=payload.get("details") or {}, erase=bool(payload.get("erase")))


def _postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def bound_lock_wait() -> None:
    """In the current transaction, let no lock wait last longer than the setting (PostgreSQL;
    SQLite takes no row locks). Ends with the transaction."""
    if _postgres():
        ms = int(current_settings().withdrawal_lock_wait_seconds * 1000)
        db.session.execute(sql_text("SELECT set_config('lock_timeout', :ms, true)"),
                           {"ms": f"{ms}ms"})


def lock_timed_out(exc: DBAPIError) -> bool:
    """Whether the error is :func:`bound_lock_wait`'s limit running out."""
    return str(getattr(exc.orig, "sqlstate", "") or "") == LOCK_NOT_AVAILABLE


def now_or_queued(apply: Callable[[], T], queue: Callable[[], T]) -> T:
    """Run ``apply`` (a transaction that calls :func:`bound_lock_wait` first); if a lock was
    not free in time, roll back and run ``queue`` (a transaction taking no row lock)."""
    try:
        return subscriptions.retrying(apply)
    except DBAPIError as exc:
        db.session.rollback()
        if not lock_timed_out(exc):
            raise
    log.info("a withdrawal found its subscription held by a delivery: queued for the worker")
    return queue()


def unsubscribe(subscription_id: int, nonce: str | None, client: Client, *,
                origin: str = "link") -> UnsubscribeOutcome:
    """Withdraw through a signed link (``subscriptions.unsubscribe``'s outcomes), answering
    within the lock wait however long a delivery holds the subscription. Idempotent."""
    request = Withdrawal(origin=origin, client=client, at=utcnow())
    return now_or_queued(lambda: _unsubscribe_now(subscription_id, nonce, request),
                         lambda: _unsubscribe_queued(subscription_id, nonce, request))


def _unsubscribe_now(subscription_id: int, nonce: str | None,
                     request: Withdrawal) -> UnsubscribeOutcome:
    bound_lock_wait()
    sub = db.session.get(Subscription, subscription_id, with_for_update=True,
                         populate_existing=True)
    if sub is None:
        db.session.rollback()
        return "invalid"
    if sub.status in ACTIVE_STATUSES and nonce is not None and \
            not secrets.compare_digest(sub.nonce, nonce):
        db.session.rollback()
        return "invalid"
    if apply_queued(sub) or sub.status not in ACTIVE_STATUSES:  # an earlier request's
        db.session.commit()
        return "already"
    _apply(sub, request)
    db.session.commit()
    return "unsubscribed"


def _unsubscribe_queued(subscription_id: int, nonce: str | None,
                        request: Withdrawal) -> UnsubscribeOutcome:
    """The subscription is held: check the link against an unlocked read (a plain read
    never waits on PostgreSQL) and queue the withdrawal."""
    row = db.session.execute(select(Subscription.status, Subscription.nonce)
                             .where(Subscription.id == subscription_id)).first()
    if row is None:
        db.session.rollback()
        return "invalid"
    if row.status not in ACTIVE_STATUSES:
        db.session.rollback()
        return "already"
    if nonce is not None and not secrets.compare_digest(row.nonce, nonce):
        db.session.rollback()
        return "invalid"
    queue(subscription_id, request)
    db.session.commit()
    return "unsubscribed"


def serial_key(subscription_id: int) -> str:
    """The queued withdrawals of one subscription run in order, and are found, by this key."""
    return f"{SERIAL_PREFIX}{subscription_id}"


def queue(subscription_id: int, request: Withdrawal) -> None:
    """Queue the withdrawal for the worker, in the caller's transaction, taking no lock at
    all: the row names its subscription by its serial key and payload, not by the foreign
    key, whose check would share-lock the subscription row and so wait for its holder like
    the withdrawal itself. A withdrawal already waiting for it wins (it came first)."""
    if (request.kind != EventKind.BOUNCED and not request.erase
            and subscription_id in pending([subscription_id])):
        return
    db.session.add(OutboxItem.pending(
        KIND, payload={**request.payload(), "subscription_id": subscription_id}, now=utcnow(),
        serial_key=serial_key(subscription_id)))


def _waiting(subscription_ids: Collection[int]) -> Any:
    return (_ROWS.c.serial_key.in_([serial_key(i) for i in subscription_ids]),
            _ROWS.c.kind == KIND, _ROWS.c.status.in_(_WAITING),
            type_coerce(_ROWS.c.payload, JSON)["at"].as_string().is_not(None))


def pending(subscription_ids: Collection[int]) -> set[int]:
    """Which of these subscriptions have a withdrawal waiting (one indexed statement): mail
    nothing to them but the goodbye, and show them as unsubscribed."""
    if not subscription_ids:
        return set()
    found = db.session.scalars(select(_ROWS.c.serial_key).where(
        *_waiting(subscription_ids), type_coerce(_ROWS.c.payload, JSON)["kind"].as_string()
        != str(EventKind.BOUNCED)))
    return {int(key.removeprefix(SERIAL_PREFIX)) for key in found if key}


def waiting_for_address(list_id: int, email_hash: str) -> bool:
    """Whether the address's active subscription on the list has a withdrawal (or
    erasure) waiting, in one indexed statement taking no lock: a queued signup then has
    it applied first (``intake``); almost always there is none."""
    active = select(literal(SERIAL_PREFIX) + cast(Subscription.id, String)).where(
        Subscription.list_id == list_id, Subscription.email_hash == email_hash,
        Subscription.status.in_(ACTIVE_STATUSES))
    return db.session.scalar(select(_ROWS.c.id).where(
        _ROWS.c.serial_key.in_(active.scalar_subquery()), _ROWS.c.kind == KIND,
        _ROWS.c.status.in_(_WAITING)).limit(1)) is not None


class QueuedWithdrawal(TypedDict):
    """A withdrawal (or erasure, or bounce) still waiting for the worker, as an access
    request shows it: the evidence its row holds about the person."""

    subscription_id: int
    kind: str
    origin: str
    received_at: str
    ip: str | None
    user_agent: str | None


def queued(subscription_ids: Collection[int]) -> list[QueuedWithdrawal]:
    """The withdrawals of these subscriptions still waiting, oldest first (Art. 15: their IP
    and user agent are data held about the person until the worker applies them)."""
    if not subscription_ids:
        return []
    rows = db.session.scalars(select(_ROWS.c.payload).where(*_waiting(subscription_ids))
                              .order_by(_ROWS.c.id)).all()
    return [{"subscription_id": p["subscription_id"], "kind": p["kind"], "origin": p["origin"],
             "received_at": p["at"], "ip": p.get("ip"), "user_agent": p.get("user_agent")}
            for p in rows]


#: What a withdrawal still waiting past the retention of queued requests keeps: what it
#: needs to be applied and what the ledger's minimized events keep (time, channel, kind).
_KEPT_WAITING = ("at", "origin", "kind", "subscription_id", "erase")
_KEPT_DETAILS = (*ledger.KEPT_DETAIL_KEYS, "reported_at")


def minimize_stale(as_of: datetime, pending_retention_days: int) -> int:
    """Keep no client evidence in withdrawal rows longer than the other queued requests keep
    theirs (``intake.blank_stale``), in the caller's transaction; how many rows changed.

    Unlike a signup, a waiting withdrawal is never dropped (it would be a withdrawal lost):
    it loses its IP, user agent and request id and the details minimization would strip,
    and is still applied, with its time and channel. A finished row still holding a
    request (none should) is blanked."""
    cutoff = as_of - timedelta(days=pending_retention_days)
    rows = db.session.execute(select(_ROWS.c.id, _ROWS.c.status, _ROWS.c.payload).where(
        _ROWS.c.kind == KIND, _ROWS.c.created_at < cutoff,
        type_coerce(_ROWS.c.payload, JSON)["at"].as_string().is_not(None))).all()
    changed = 0
    for row in rows:
        payload = row.payload
        if row.status in _WAITING:
            kept = {k: payload[k] for k in _KEPT_WAITING if k in payload}
            kept["details"] = {k: v for k, v in (payload.get("details") or {}).items()
                               if k in _KEPT_DETAILS}
            if kept == payload:
                continue
        else:
            kept = PROCESSED
        db.session.execute(update(_ROWS).where(_ROWS.c.id == row.id).values(
            payload=kept, last_error=None), execution_options={"synchronize_session": False})
        changed += 1
    return changed


def apply_queued(sub: Subscription, *, before: datetime | None = None) -> bool:
    """Apply the subscription's waiting withdrawals, oldest first, in the caller's
    transaction (the caller holds the row lock): the first one withdraws (with its request's
    time and client), later ones find it withdrawn; each row is marked processed, its
    payload blanked. A row another worker is delivering right now (locked) is left to it: it
    finds the subscription withdrawn. ``before``: only the requests made before then (a
    queued confirmation click applies those first, and is then refused). Whether one
    withdrew."""
    waiting = db.session.execute(select(_ROWS.c.id, _ROWS.c.payload).where(*_waiting([sub.id]))
                                 .order_by(_ROWS.c.id)).all()
    if before is not None:
        waiting = [row for row in waiting if Withdrawal.of(row.payload).at < before]
    if not waiting:
        return False
    withdrew = False
    for row in waiting:
        request = Withdrawal.of(row.payload)
        if request.kind == EventKind.BOUNCED:
            _bounced(sub, request)
        elif request.erase:
            withdrew = _erase(sub, actor=request.details.get("actor"), at=request.at)[1] or withdrew
        elif sub.status in ACTIVE_STATUSES:
            _apply(sub, request)
            withdrew = True
    free = db.session.scalars(select(_ROWS.c.id).where(_ROWS.c.id.in_([r.id for r in waiting]))
                              .with_for_update(skip_locked=True)).all()
    if free:
        db.session.execute(update(_ROWS).where(_ROWS.c.id.in_(list(free))).values(
            status=OutboxStatus.DONE, payload=PROCESSED, finished_at=utcnow(), last_error=None),
            execution_options={"synchronize_session": False})
    return withdrew


def _apply(sub: Subscription, request: Withdrawal) -> None:
    subscriptions.withdraw(sub, origin=request.origin, client=request.client, at=request.at,
                           details=request.details or None, kind=request.kind)


def erase(sub: Subscription, *, actor: str | None, at: datetime) -> tuple[str, bool]:
    """Art. 17 erasure of one subscription, in the caller's transaction (the caller holds
    the row lock; ``privacy.rights.erase`` answers the operator): a queued withdrawal is
    applied first, then an active subscription is withdrawn (kind ``erased``, no goodbye:
    someone who asked for erasure gets no "you have been unsubscribed" mail), else the
    erasure is noted; the names and fields proof does not need are deleted, from its
    signups and its mail copies too. Returns the status it had, and whether it withdrew."""
    apply_queued(sub)
    return _erase(sub, actor=actor, at=at)


def _erase(sub: Subscription, *, actor: str | None, at: datetime) -> tuple[str, bool]:
    was = sub.status
    if was in ACTIVE_STATUSES:
        subscriptions.withdraw(sub, origin="operator", kind=EventKind.ERASED, at=at,
                               details={"actor": actor}, goodbye=False)
    else:
        ledger.append(sub, EventKind.ERASED, origin="operator", at=at,
                      details={"actor": actor, "was": was})
    sub.first_name = sub.last_name = None
    sub.fields = None
    sub.erased_at = sub.erased_at or at
    signups.forget_personal([sub.id])
    mailcopies.forget_names([sub.id])
    return was, was in ACTIVE_STATUSES


def queue_erasure(subscription_id: int, *, actor: str, at: datetime) -> None:
    """Queue :func:`erase` for the worker (the subscription is held), in the caller's
    transaction; it runs after any withdrawal queued before it."""
    queue(subscription_id, Withdrawal(origin="operator", client=Client(), at=at,
                                      kind=EventKind.ERASED, details={"actor": actor},
                                      erase=True))


def _bounced(sub: Subscription, request: Withdrawal) -> None:
    """A bounce queued by the webhook: recorded once (by ActiveCampaign's time for it)."""
    reported = request.details.get("reported_at")
    if reported is not None and any(
            event.details.get("reported_at") == reported
            for event in db.session.scalars(select(ConsentEvent).where(
                ConsentEvent.subscription_id == sub.id, ConsentEvent.kind == EventKind.BOUNCED))):
        return
    ledger.append(sub, EventKind.BOUNCED, origin=request.origin, at=request.at,
                  details=request.details)


def process(item: OutboxItem) -> None:
    """Outbox handler: wait for the subscription's lock (the worker may wait; the request
    could not) and apply its queued withdrawals, in the row's transaction. Repeatable: a
    row already processed does nothing."""
    payload = item.payload or {}
    if "at" not in payload:
        return
    sub = db.session.get(Subscription, payload["subscription_id"], with_for_update=True,
                         populate_existing=True)
    if sub is None:
        db.session.execute(update(_ROWS).where(_ROWS.c.id == item.id).values(payload=PROCESSED))
        return
    with logs.context(request_id=(item.payload or {}).get("request_id")):
        apply_queued(sub)
