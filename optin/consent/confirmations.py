"""Confirmation intake: the click records what it saw; the worker applies the consent.

``POST /confirm/<token>`` does the small work a signup does. The token is checked
without the database (signature, expiry); one plain SELECT reads the
subscription's state, without locks (a SELECT never waits on a row lock in
PostgreSQL), only so that a withdrawn or outdated link still gets its page; then
one INSERT commits an outbox row of kind ``confirm_intake`` holding the click's
evidence (its time, IP, user agent, request id, the token's nonce and signup) and
the request answers 303. The same statements run whether the confirmation is new,
queued already or applied already.

The worker hands the row to :func:`process`, which runs the state machine
(``subscriptions.record_confirmation``: nonce, status, signup, ledger event with
the **click's** time, IP and user agent, the sync and welcome rows) in the row's
own transaction and blanks the payload in it. Repeating it is harmless (a
confirmed subscription stays as it is); a withdrawal recorded meanwhile changed
the nonce, so the queued click is refused. A row the handler fails on is retried
and then kept as a dead letter, as every outbox row is.

While a row waits: the confirmation page counts it as given (:func:`pending`), an
erasure drops it (:func:`drop_queued`), an access request shows it
(:func:`queued`), and retention blanks one that never got applied
(:func:`minimize_stale`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

from sqlalchemy import JSON, CursorResult, and_, bindparam, select, type_coerce, update

from optin.consent import subscriptions
from optin.consent.subscriptions import Client
from optin.extensions import db
from optin.models import (
    ACTIVE_STATUSES,
    OutboxItem,
    OutboxKind,
    OutboxStatus,
    Signup,
    Subscription,
    utcnow,
)
from optin.ops import logs

log = logging.getLogger(__name__)

KIND = OutboxKind.CONFIRM_INTAKE
#: The payload of a row once applied (or dropped): nothing personal.
PROCESSED: dict[str, Any] = {"processed": True}
DROPPED_BY_ERASURE: dict[str, Any] = {"dropped": "erased"}
WAITING = (OutboxStatus.PENDING, OutboxStatus.DEAD)

_ROWS = OutboxItem.__table__
_SUB = Subscription.__table__
_COLUMNS = ("kind", "serial_key", "subscription_id", "payload", "status", "attempts",
            "next_attempt_at", "created_at")
# Built once: plain statements (the ORM's identity map and unit of work cost more CPU
# than the database does for this request).
_INSERT = _ROWS.insert().values({c: bindparam(c, type_=_ROWS.c[c].type) for c in _COLUMNS})
_SIGNUP = Signup.__table__
# The subscription's state and whether the signup the link names is one of its own.
_STATE = (select(_SUB.c.status, _SUB.c.nonce, _SUB.c.withdrawn_at, _SUB.c.locale,
                 _SUB.c.email_hash, _SIGNUP.c.seq)
          .outerjoin(_SIGNUP, and_(_SIGNUP.c.subscription_id == _SUB.c.id,
                                   _SIGNUP.c.seq == bindparam("seq")))
          .where(_SUB.c.id == bindparam("sub_id")))

ClickOutcome = Literal["queued", "ended", "invalid"]


@dataclass(frozen=True)
class Click:
    """What :func:`accept` did with a click, and the locale of the page about it."""

    outcome: ClickOutcome
    locale: str | None = None


def accept(subscription_id: int, nonce: str, signup_seq: int | None, client: Client) -> Click:
    """Queue the click on a valid confirmation link (``queued``, committed before the
    caller answers), or say why it cannot count: ``ended`` (the subscription was
    withdrawn), ``invalid`` (unknown or outdated link). Nothing is locked.

    A click on a subscription confirmed already is queued too (the worker finds it
    confirmed and changes nothing), so the request's statements are the same for a
    first click, a second one, and one after the worker applied the first.
    """
    row = db.session.execute(_STATE, {"sub_id": subscription_id, "seq": signup_seq}).first()
    if row is None:
        db.session.rollback()
        return Click("invalid")
    if row.status not in ACTIVE_STATUSES:
        db.session.rollback()
        return Click("ended" if row.withdrawn_at is not None else "invalid", row.locale)
    # (compare_digest is unneeded: the nonce came signed.) A link naming a signup this
    # subscription never had is refused, as the state machine would.
    if row.nonce != nonce or (signup_seq is not None and row.seq is None):
        db.session.rollback()
        return Click("invalid", row.locale)
    now = utcnow()
    payload = {"at": now.isoformat(), "ip": client.ip, "user_agent": client.user_agent,
               "request_id": logs.request_id(), "nonce": nonce, "signup_seq": signup_seq}
    # The address's key: its queued signups are applied first, then this click, in order.
    db.session.execute(_INSERT, OutboxItem.pending_values(
        KIND, subscription_id=subscription_id, payload=payload, now=now,
        serial_key=row.email_hash))
    db.session.commit()
    return Click("queued", row.locale)


def process(item: OutboxItem) -> None:
    """Outbox handler: apply a queued click in the row's transaction, with the click's
    time, IP and user agent, and blank the row's payload in it. Repeatable: a row
    already applied or dropped does nothing."""
    payload = item.payload or {}
    if "nonce" not in payload or item.subscription_id is None:
        return
    with logs.context(request_id=payload.get("request_id")):
        done = subscriptions.record_confirmation(
            item.subscription_id, payload["nonce"],
            Client(ip=payload.get("ip"), user_agent=payload.get("user_agent")),
            payload.get("signup_seq"), at=datetime.fromisoformat(payload["at"]))
        if done.outcome == "confirmed":
            log.info("subscription %s confirmed on list %s", item.subscription_id,
                     done.mailing_list.slug if done.mailing_list else None)
        elif done.outcome == "invalid":  # withdrawn or erased since the click
            log.info("queued confirmation of subscription %s refused: the link is no "
                     "longer valid", item.subscription_id)
    # What became of the click stays visible on the row (nothing personal).
    db.session.execute(update(_ROWS).where(_ROWS.c.id == item.id).values(
        payload={**PROCESSED, "outcome": done.outcome}))


def _waiting(*criteria: Any) -> Any:
    """Rows that still hold a click: waiting, or dead letters (an operator's retry
    would still apply them)."""
    return (_ROWS.c.kind == KIND, _ROWS.c.status.in_(WAITING), *criteria)


def pending(subscription_id: int, nonce: str) -> bool:
    """Whether a click on a link with ``nonce`` waits to be applied to the subscription
    (the page then says "confirmed": the consent was given and will be recorded)."""
    nonces = db.session.scalars(select(_ROWS.c.payload).where(
        *_waiting(_ROWS.c.subscription_id == subscription_id))).all()
    return any(p.get("nonce") == nonce for p in nonces)


class QueuedConfirmation(TypedDict):
    """A click still waiting to be applied, as an access request shows it."""

    subscription_id: int
    received_at: str
    ip: str | None
    user_agent: str | None


def queued(digest: str) -> list[QueuedConfirmation]:
    """The clicks on the address's links still waiting (its keyed hash is their serial
    key), dead letters included (Art. 15: their IP and user agent are data held about
    the person), oldest first."""
    rows = db.session.execute(select(_ROWS.c.subscription_id, _ROWS.c.payload).where(
        *_waiting(_ROWS.c.serial_key == digest)).order_by(_ROWS.c.id)).all()
    return [{"subscription_id": sid, "received_at": p["at"], "ip": p.get("ip"),
             "user_agent": p.get("user_agent")} for sid, p in rows if "nonce" in p]


def drop_queued(digest: str) -> int:
    """Drop the clicks on the address's links still waiting (an erasure wins over them),
    in the caller's transaction; how many were dropped.

    Call it before locking the address's subscriptions: on PostgreSQL the UPDATE waits
    for a worker applying one of them right now (it holds the row and then takes the
    subscription's lock), so the caller then sees the confirmation it recorded.
    """
    result: CursorResult[Any] = db.session.execute(  # type: ignore[assignment]
        update(_ROWS).where(*_waiting(_ROWS.c.serial_key == digest))
        .values(status=OutboxStatus.DONE, payload=DROPPED_BY_ERASURE, finished_at=utcnow()),
        execution_options={"synchronize_session": False})
    return result.rowcount or 0


def minimize_stale(as_of: datetime, pending_retention_days: int) -> int:
    """Blank the payload of click rows older than an unconfirmed signup is kept (dead
    letters a worker never applied), in the caller's transaction."""
    cutoff = as_of - timedelta(days=pending_retention_days)
    result: CursorResult[Any] = db.session.execute(  # type: ignore[assignment]
        update(_ROWS).where(_ROWS.c.kind == KIND, _ROWS.c.created_at < cutoff,
                            type_coerce(_ROWS.c.payload, JSON)["nonce"].as_string().is_not(None))
        .values(payload=PROCESSED, last_error=None),
        execution_options={"synchronize_session": False})
    return result.rowcount or 0
