"""Confirmation intake: the click records what it saw; the worker applies the consent.

``POST /confirm/<token>`` does the small work a signup does. The token is checked
without the database (signature, expiry); then one ``INSERT … SELECT`` commits an
outbox row of kind ``confirm_intake`` holding the click's evidence (its time, IP,
user agent, request id, the subscription, the token's nonce and signup) if the
subscription is still active with that nonce, and the request answers 303. The
SELECT in it takes no lock and waits for none; only a click that inserted nothing
reads the state again, so that a withdrawn or outdated link gets its page. The same
statement runs whether the confirmation is new, queued already or applied already.

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

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypedDict

from sqlalchemy import CursorResult, bindparam, exists, literal, select, update

from optin.consent import queued as queued_requests
from optin.consent import subscriptions, withdrawals
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
PROCESSED = queued_requests.PROCESSED
DROPPED_BY_ERASURE = queued_requests.DROPPED_BY_ERASURE
WAITING = (OutboxStatus.PENDING, OutboxStatus.DEAD)

_ROWS = OutboxItem.__table__
_SUB = Subscription.__table__
_SIGNUP = Signup.__table__
_STATE = select(_SUB.c.status, _SUB.c.nonce, _SUB.c.withdrawn_at, _SUB.c.locale).where(
    _SUB.c.id == bindparam("sub_id"))


@functools.cache
def _insert(names_signup: bool) -> Any:
    """The click's one statement, built once per shape: INSERT … SELECT, which writes the
    row only if the link is still valid (an active subscription with the link's nonce and,
    if the link names one, that signup), keyed by the address's hash.

    No ``subscription_id`` column: its foreign key check would take a share lock on the
    subscription and wait for a worker holding it (the id is in the payload instead).
    """
    # The statuses as plain bound literals: an IN list of Python values is an "expanding"
    # parameter, re-rendered into the SQL on every execution.
    statuses = [literal(status.value, _SUB.c.status.type) for status in ACTIVE_STATUSES]
    valid = [_SUB.c.id == bindparam("sub_id"), _SUB.c.nonce == bindparam("nonce"),
             _SUB.c.status.in_(statuses)]
    if names_signup:
        valid.append(exists().where(_SIGNUP.c.subscription_id == _SUB.c.id,
                                    _SIGNUP.c.seq == bindparam("seq")))
    values = select(
        literal(KIND.value, _ROWS.c.kind.type), _SUB.c.email_hash,
        bindparam("payload", type_=_ROWS.c.payload.type),
        literal(OutboxStatus.PENDING.value, _ROWS.c.status.type), literal(0),
        bindparam("now", type_=_ROWS.c.next_attempt_at.type),
        bindparam("now", type_=_ROWS.c.created_at.type),
    ).where(*valid)
    # RETURNING says whether a row went in (psycopg has no row count for INSERT … SELECT).
    return _ROWS.insert().from_select(
        ["kind", "serial_key", "payload", "status", "attempts", "next_attempt_at", "created_at"],
        values).returning(_ROWS.c.id)


ClickOutcome = Literal["queued", "ended", "invalid"]


@dataclass(frozen=True)
class Click:
    """What :func:`accept` did with a click, and the locale of the page about it."""

    outcome: ClickOutcome
    locale: str | None = None


def accept(subscription_id: int, nonce: str, signup_seq: int | None, client: Client) -> Click:
    """Queue the click on a valid confirmation link (``queued``, committed before the
    caller answers), or say why it cannot count: ``ended`` (the subscription was
    withdrawn), ``invalid`` (unknown or outdated link). Nothing is locked or waited for.

    A valid click costs one statement and the COMMIT, like the one-INSERT baseline. A
    click on a subscription confirmed already is queued too (the worker finds it
    confirmed and changes nothing), so the request's statements are the same for a
    first click, a second one, and one after the worker applied the first. Only a
    click that cannot count reads why, for its page.
    """
    now = utcnow()
    payload = {"subscription_id": subscription_id, "at": now.isoformat(), "ip": client.ip,
               "user_agent": client.user_agent, "request_id": logs.request_id(),
               "nonce": nonce, "signup_seq": signup_seq}
    # A pooled connection of its own, not the session (as the signup intake's INSERT).
    with db.engine.connect() as conn:
        queued = conn.execute(
            _insert(signup_seq is not None),
            {"sub_id": subscription_id, "nonce": nonce, "seq": signup_seq, "payload": payload,
             "now": now}).first()
        if queued is not None:
            conn.commit()
            return Click("queued")
        conn.rollback()
        row = conn.execute(_STATE, {"sub_id": subscription_id}).first()
        conn.rollback()
    if row is None:
        return Click("invalid")
    if row.status not in ACTIVE_STATUSES and row.withdrawn_at is not None:
        return Click("ended", row.locale)
    return Click("invalid", row.locale)


def process(item: OutboxItem) -> None:
    """Outbox handler: apply a queued click in the row's transaction, with the click's
    time, IP and user agent, and blank the row's payload in it. Repeatable: a row
    already applied or dropped does nothing."""
    payload = item.payload or {}
    if "nonce" not in payload:
        return
    sub_id = payload["subscription_id"]
    at = datetime.fromisoformat(payload["at"])
    with logs.context(request_id=payload.get("request_id")):
        # A withdrawal asked for before the click, still queued behind a row lock, comes
        # first: the ledger then reads withdrawn, and the click is refused by its nonce.
        sub = db.session.get(Subscription, sub_id, with_for_update=True)
        if sub is not None:
            withdrawals.apply_queued(sub, before=at)
        done = subscriptions.record_confirmation(
            sub_id, payload["nonce"],
            Client(ip=payload.get("ip"), user_agent=payload.get("user_agent")),
            payload.get("signup_seq"), at=at)
        if done.outcome == "confirmed":
            log.info("subscription %s confirmed on list %s", sub_id,
                     done.mailing_list.slug if done.mailing_list else None)
        elif done.outcome == "invalid":  # withdrawn or erased since the click
            log.info("queued confirmation of subscription %s refused: the link is no "
                     "longer valid", sub_id)
    # What became of the click stays visible on the row (nothing personal).
    db.session.execute(update(_ROWS).where(_ROWS.c.id == item.id).values(
        payload={**PROCESSED, "outcome": done.outcome}))


def _waiting(*criteria: Any) -> Any:
    """Rows that still hold a click: waiting, or dead letters (an operator's retry
    would still apply them)."""
    return (_ROWS.c.kind == KIND, _ROWS.c.status.in_(WAITING), *criteria)


def pending(sub: Subscription) -> bool:
    """Whether a click on a link with the subscription's current nonce waits to be
    applied (the page then says "confirmed": the consent was given and will be
    recorded). The address's hash is the rows' key; there are few per address."""
    payloads = db.session.scalars(select(_ROWS.c.payload).where(
        *_waiting(_ROWS.c.serial_key == sub.email_hash))).all()
    return any(p.get("subscription_id") == sub.id and p.get("nonce") == sub.nonce
               for p in payloads)


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
    payloads = db.session.scalars(select(_ROWS.c.payload).where(
        *_waiting(_ROWS.c.serial_key == digest)).order_by(_ROWS.c.id)).all()
    return [{"subscription_id": p["subscription_id"], "received_at": p["at"], "ip": p.get("ip"),
             "user_agent": p.get("user_agent")} for p in payloads if "nonce" in p]


def drop_queued(digest: str) -> int:
    """Drop the clicks on the address's links still waiting (an erasure wins over them),
    in the caller's transaction; how many were dropped.

    A row a worker is applying right now (PostgreSQL: locked) is skipped, not waited
    for (that worker may itself wait for a delivery holding the subscription): its
    apply blanks the payload, and the erasure then withdraws what it recorded.
    """
    waiting = select(_ROWS.c.id).where(*_waiting(_ROWS.c.serial_key == digest)) \
        .with_for_update(skip_locked=True)
    result: CursorResult[Any] = db.session.execute(  # type: ignore[assignment]
        update(_ROWS).where(_ROWS.c.id.in_(waiting.scalar_subquery()))
        .values(status=OutboxStatus.DONE, payload=DROPPED_BY_ERASURE, finished_at=utcnow()),
        execution_options={"synchronize_session": False})
    return result.rowcount or 0


def minimize_stale(as_of: datetime, pending_retention_days: int) -> int:
    """Blank the payload of click rows older than an unconfirmed signup is kept (dead
    letters a worker never applied), in the caller's transaction."""
    return queued_requests.blank_stale(KIND, "nonce", as_of, pending_retention_days)
