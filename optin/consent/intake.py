"""Signup intake: the request records what it saw; the worker runs the state machine.

A signup request does the same work whatever the address's state: it checks the
input against the list and consent text (per-process snapshots), then commits (on a
pooled connection, outside the request's session) one outbox row of kind
``signup_intake`` whose payload is the evidence: the request's time, IP and user
agent, the consent text it showed, and the values entered. Only then is it answered
202. So neither the answer nor its timing says whether the address is known, and a
signup answered 202 is committed.

The worker hands the row to :func:`process`, which runs the state machine
(``subscriptions.record_signup``: dedupe, resend interval, per-address cap,
ledger events, the confirmation mail's outbox row) in the row's own
transaction, with the request's time and IP as the ledger's. The same
transaction replaces the payload with a marker, so the personal data lives
in the intake row only while it waits.

While a row waits, the promises hold for it too: an erasure of the address
drops its queued rows (:func:`drop_queued`); a withdrawal recorded after the
request arrived wins over it (``subscriptions.record_signup``); retention
blanks rows that never got processed (:func:`minimize_stale`).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import JSON, CursorResult, select, type_coerce, update

from optin.config import Settings, current_settings
from optin.consent import lists, subscriptions, withdrawals
from optin.consent import queued as queued_requests
from optin.consent.addresses import address_hash
from optin.consent.lists import ListSnapshot
from optin.consent.subscriptions import Client, SignupRequest
from optin.extensions import db
from optin.models import ACTIVE_STATUSES, OutboxItem, OutboxKind, OutboxStatus, Subscription, utcnow
from optin.ops import logs, metrics

log = logging.getLogger(__name__)

KIND = OutboxKind.SIGNUP_INTAKE
#: The payload of an intake row once processed (or dropped): nothing personal.
PROCESSED = queued_requests.PROCESSED
DROPPED_BY_ERASURE = queued_requests.DROPPED_BY_ERASURE
_VALUES = ("email", "first_name", "last_name", "fields", "source_url", "source_url_from",
           "locale", "consent_text_version", "list")

_ROWS = OutboxItem.__table__


def accept(req: SignupRequest, client: Client, settings: Settings) -> None:
    """Validate the signup and commit its intake row; the caller answers 202 after this.

    Raises ``SignupInvalid`` (nothing stored) for what the visitor can fix. The same
    statements run for every address (one INSERT and the COMMIT): nothing here reads
    the address's subscriptions.
    """
    if req.website:
        log.info("signup dropped: honeypot filled")
        metrics.honeypot()
        return
    mailing_list, text, email = subscriptions.resolve(req, settings)
    now = utcnow()
    digest = address_hash(email, settings.hash_key)
    payload = {
        "at": now.isoformat(), "ip": client.ip, "user_agent": client.user_agent,
        "request_id": logs.request_id(),
        "list_id": mailing_list.id, "consent_text_id": text.id,
        # What the form linked: the worker may run after an operator changed it.
        "privacy_policy_url": mailing_list.privacy_policy_url,
        "email_hash": digest, "resolved_email": email,
        "request": {"email": req.email, "list": req.list, "locale": text.locale,
                    "consent_text_version": req.consent_text_version,
                    "first_name": req.first_name, "last_name": req.last_name,
                    "fields": req.fields or {}, "source_url": req.source_url,
                    "source_url_from": req.source_url_from},
    }
    # One address's rows run in the order they came (the serial key), so the resend interval
    # and the ledger see its requests one after another, as they were made. A pooled
    # connection of its own, not the session: the session's unit of work and transaction
    # bookkeeping cost more than the statement (bench/inprocess.py); a failed COMMIT
    # raises here as there, and is answered 503 with nothing stored.
    with db.engine.begin() as conn:
        conn.execute(queued_requests.INSERT, OutboxItem.pending_values(KIND, payload=payload, now=now,
                                                        serial_key=digest))


def process(item: OutboxItem) -> None:
    """Outbox handler: run the signup state machine for a queued request, in the row's
    transaction, and blank the row's payload in it. Repeatable: a row already processed
    or dropped (its payload says so) does nothing."""
    payload = item.payload or {}
    if "request" not in payload:
        return
    settings = current_settings()
    values = payload["request"]
    req = SignupRequest(**{k: values.get(k) for k in _VALUES if k in values})
    req.fields = req.fields or {}
    mailing_list = as_requested(lists.list_by_id(payload["list_id"]), payload)
    text = lists.text_by_id(payload["consent_text_id"])
    if mailing_list is None or text is None:  # deleted meanwhile: nothing to sign up for
        log.warning("signup intake %s names a list or consent text that is gone", item.id)
    else:
        email, at = payload["resolved_email"], datetime.fromisoformat(payload["at"])
        with logs.context(request_id=payload.get("request_id")):  # the worker's lines name it
            _withdrawals_first(mailing_list.id, address_hash(email, settings.hash_key), at)
            subscriptions.record_signup(
                mailing_list, text, email, req,
                Client(ip=payload.get("ip"), user_agent=payload.get("user_agent")), settings,
                at=at)
    db.session.execute(update(_ROWS).where(_ROWS.c.id == item.id).values(payload=PROCESSED))


def as_requested(mailing_list: ListSnapshot | None, payload: dict[str, Any]) -> ListSnapshot | None:
    """The list as the request saw it: the privacy policy in force then is the one the
    ledger records, whatever an operator set since (rows queued before the payload named it
    record the list's current one, as they did)."""
    if mailing_list is None or "privacy_policy_url" not in payload:
        return mailing_list
    return dataclasses.replace(mailing_list, privacy_policy_url=payload["privacy_policy_url"])


def _withdrawals_first(list_id: int, digest: str, at: datetime) -> None:
    """Apply the withdrawals of the address's active subscription on the list that were
    asked for before the signup and still wait (a delivery held the row when they came),
    under its row lock, in the row's transaction: the signup then finds the address
    withdrawn and starts a new subscription with its own mail, where it would otherwise
    be kept as a repeat of the subscription the withdrawal then ends, and lost with it."""
    if not withdrawals.waiting_for_address(list_id, digest):
        return
    sub = db.session.scalar(select(Subscription).where(
        Subscription.list_id == list_id, Subscription.email_hash == digest,
        Subscription.status.in_(ACTIVE_STATUSES)).with_for_update())
    if sub is not None:
        withdrawals.apply_queued(sub, before=at)


def _queued(digest: str) -> Any:
    """The address's intake rows that still hold its request: waiting, or dead letters
    (``optin outbox retry`` would run those still, and they keep the data until retention)."""
    return (_ROWS.c.kind == KIND, _ROWS.c.status.in_((OutboxStatus.PENDING, OutboxStatus.DEAD)),
            type_coerce(_ROWS.c.payload, JSON)["email_hash"].as_string() == digest)


class QueuedSignup(TypedDict):
    """A signup request still waiting in the intake, as an access request shows it."""

    list: str | None
    received_at: str
    ip: str | None
    user_agent: str | None
    entered: dict[str, Any]


def queued(digest: str) -> list[QueuedSignup]:
    """The address's signups still waiting to be processed, dead letters included (Art. 15:
    they are data held about the person too, until the worker takes them or retention
    blanks them), oldest first."""
    rows = db.session.scalars(select(_ROWS.c.payload).where(*_queued(digest))
                              .order_by(_ROWS.c.id)).all()
    return [{"list": (row.get("request") or {}).get("list"), "received_at": row["at"],
             "ip": row.get("ip"), "user_agent": row.get("user_agent"),
             "entered": row.get("request") or {}}
            for row in rows if "request" in row]


def drop_queued(digest: str, *, skip_locked: bool = False) -> int:
    """Drop the address's signups still waiting in the intake (an erasure wins over them),
    in the caller's transaction; how many were dropped.

    On PostgreSQL the UPDATE waits for a worker processing one of them right now, so
    the caller then sees the subscription that worker created; ``skip_locked`` leaves
    those to the worker instead (:func:`in_flight` then finds them).
    """
    where: Any = _queued(digest)
    if skip_locked:
        where = (_ROWS.c.id.in_(select(_ROWS.c.id).where(*where)
                                .with_for_update(skip_locked=True).scalar_subquery()),)
    result: CursorResult[Any] = db.session.execute(  # type: ignore[assignment]
        update(_ROWS).where(*where)
        .values(status=OutboxStatus.DONE, payload=DROPPED_BY_ERASURE, finished_at=utcnow()),
        execution_options={"synchronize_session": False})
    return result.rowcount or 0


def in_flight(digest: str) -> int:
    """How many of the address's signups are still queued after
    ``drop_queued(skip_locked=True)``: the ones a worker is processing right now (a plain
    read, which never waits on PostgreSQL)."""
    return len(db.session.scalars(select(_ROWS.c.id).where(*_queued(digest))).all())


def minimize_stale(as_of: datetime, pending_retention_days: int) -> int:
    """Blank the payload of intake rows older than an unconfirmed signup is kept (dead
    letters, or rows a broken worker never took), in the caller's transaction."""
    return queued_requests.blank_stale(KIND, "resolved_email", as_of, pending_retention_days)
