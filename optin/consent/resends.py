"""Resend requests: the button behind an expired confirmation link, queued.

The page of an expired link offers a fresh confirmation mail, and answers the same
whatever became of the signup (pending, confirmed, withdrawn): only a pending one
gets the mail. The request does the same work in every state too: one
``INSERT … SELECT`` of a ``resend_intake`` outbox row (the subscription, the link's
nonce and signup, the request's time), keyed by the address's hash so it runs after
the address's queued signups and clicks, and the COMMIT. The resend interval, the
mail budget, the ledger event and the mail run in the worker (:func:`process`).
Done in the request, a pending signup took a locked read, a Redis call and three
writes where a confirmed one took the locked read alone: whoever held the link could
tell the two apart by the answer's time, and a delivery holding the row kept the
request waiting for it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import bindparam, literal, select, update

from optin.config import current_settings
from optin.consent import queued as queued_requests
from optin.consent import subscriptions
from optin.extensions import db
from optin.models import OutboxItem, OutboxKind, OutboxStatus, Subscription, utcnow
from optin.ops import logs

log = logging.getLogger(__name__)

KIND = OutboxKind.RESEND_INTAKE

_ROWS = OutboxItem.__table__
_SUB = Subscription.__table__
# INSERT … SELECT: the serial key is the address's hash, read without a lock; no
# subscription_id column, whose foreign key check would wait for a worker holding the row.
_INSERT = _ROWS.insert().from_select(
    ["kind", "serial_key", "payload", "status", "attempts", "next_attempt_at", "created_at"],
    select(literal(KIND.value, _ROWS.c.kind.type), _SUB.c.email_hash,
           bindparam("payload", type_=_ROWS.c.payload.type),
           literal(OutboxStatus.PENDING.value, _ROWS.c.status.type), literal(0),
           bindparam("now", type_=_ROWS.c.next_attempt_at.type),
           bindparam("now", type_=_ROWS.c.created_at.type))
    .where(_SUB.c.id == bindparam("sub_id")))


def accept(subscription_id: int, nonce: str, signup_seq: int | None) -> None:
    """Queue the request (committed before the caller answers). The same statement and
    the COMMIT run whatever the subscription's state; a subscription that is gone
    inserts nothing."""
    now = utcnow()
    payload = {"subscription_id": subscription_id, "nonce": nonce, "signup_seq": signup_seq,
               "at": now.isoformat(), "request_id": logs.request_id()}
    db.session.execute(_INSERT, {"sub_id": subscription_id, "payload": payload, "now": now})
    db.session.commit()


def process(item: OutboxItem) -> None:
    """Outbox handler: queue the fresh confirmation mail if the signup is still pending
    (``subscriptions.resend_confirmation``), in the row's transaction, and blank the row.
    Repeatable: a row already processed does nothing."""
    payload = item.payload or {}
    if "nonce" not in payload:
        return
    with logs.context(request_id=payload.get("request_id")):
        sent = subscriptions.resend_confirmation(
            payload["subscription_id"], payload["nonce"], current_settings(),
            payload.get("signup_seq"), at=datetime.fromisoformat(payload["at"]))
    if sent:
        log.info("fresh confirmation mail queued for subscription %s",
                 payload["subscription_id"])
    db.session.execute(update(_ROWS).where(_ROWS.c.id == item.id)
                       .values(payload=queued_requests.PROCESSED))


def minimize_stale(as_of: datetime, pending_retention_days: int) -> int:
    """Blank the payload of requests older than an unconfirmed signup is kept (dead
    letters a worker never took), in the caller's transaction."""
    return queued_requests.blank_stale(KIND, "nonce", as_of, pending_retention_days)
