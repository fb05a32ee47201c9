"""A fresh unsubscribe link for someone whose link is broken.

A withdrawal must never fail because a link was cut short by a mail client. The
page behind a broken unsubscribe link offers a small form: the address, and a
mail with a fresh unsubscribe link goes to it for each list it is subscribed to.
The answer is the same whatever the address (known, unknown, withdrawn,
invalid): only the mailbox's owner learns anything, by reading their mail.
A request counts against the address's OPTIN_MAILS_PER_ADDRESS_PER_DAY (shared
with the confirmation mails), so the form cannot be used to flood a mailbox.

The request does the same work whatever the address (as a signup does, see
``intake.py``): one INSERT of a ``relink_intake`` outbox row holding the address's
keyed hash and the request's time, and the COMMIT. Looking the address up, the
mail budget, the ledger events and the mails run in the worker (:func:`process`).
Done in the request, the lookup, the locks and the writes a subscribed address
took made its answer measurably slower than an unknown one's, and a delivery
holding the subscription's row kept the request waiting for it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update

from optin.config import Settings, current_settings
from optin.consent import ledger, mailcap
from optin.consent import queued as queued_requests
from optin.consent.addresses import InvalidAddress, address_hash, normalize_email
from optin.extensions import db
from optin.models import (
    EventKind,
    OutboxItem,
    OutboxKind,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from optin.ops import logs

log = logging.getLogger(__name__)


KIND = OutboxKind.RELINK_INTAKE

_ROWS = OutboxItem.__table__


def request_unsubscribe_link(raw_address: str, settings: Settings) -> None:
    """Queue a request for fresh unsubscribe links (committed before the caller answers).
    Says nothing back, by design: the same statements run for every valid address, and
    an invalid one is dropped before any."""
    try:
        email = normalize_email(raw_address or "")
    except InvalidAddress:
        return
    digest = address_hash(email, settings.hash_key)
    now = utcnow()
    # The address's keyed hash only: the mail goes to the address a subscription holds.
    payload = {"email_hash": digest, "at": now.isoformat(), "request_id": logs.request_id()}
    db.session.execute(queued_requests.INSERT, OutboxItem.pending_values(KIND, payload=payload, now=now,
                                                          serial_key=digest))
    db.session.commit()


def process(item: OutboxItem) -> None:
    """Outbox handler: queue a mail with a fresh unsubscribe link for every confirmed
    subscription of the requesting address, in the row's transaction, and blank the row.
    A pending signup gets none: it receives no newsletter to leave, and its link expires.
    Repeatable: a row already processed does nothing."""
    payload = item.payload or {}
    digest = payload.get("email_hash")
    if digest is None:
        return
    at = datetime.fromisoformat(payload["at"])
    with logs.context(request_id=payload.get("request_id")):
        _queue_links(digest, at, current_settings())
    db.session.execute(update(_ROWS).where(_ROWS.c.id == item.id)
                       .values(payload=queued_requests.PROCESSED))


def _queue_links(digest: str, at: datetime, settings: Settings) -> None:
    subs = list(db.session.scalars(
        select(Subscription)
        .where(Subscription.email_hash == digest,
               Subscription.status == SubscriptionStatus.CONFIRMED)
        .order_by(Subscription.id).with_for_update()))
    if not subs or not mailcap.take_address_mail(digest, settings):
        return
    for sub in subs:
        ledger.append(sub, EventKind.UNSUBSCRIBE_LINK_REQUESTED, origin="link", at=at)
        db.session.add(OutboxItem.pending(OutboxKind.UNSUBSCRIBE_LINK_MAIL,
                                          subscription_id=sub.id, now=at))
    log.info("fresh unsubscribe link queued for %d subscription(s)", len(subs))


def minimize_stale(as_of: datetime, pending_retention_days: int) -> int:
    """Blank the payload of requests older than an unconfirmed signup is kept (dead
    letters a worker never took), in the caller's transaction."""
    return queued_requests.blank_stale(KIND, "email_hash", as_of, pending_retention_days)
