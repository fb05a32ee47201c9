"""A fresh unsubscribe link for someone whose link is broken.

A withdrawal must never fail because a link was cut short by a mail client. The
page behind a broken unsubscribe link offers a small form: the address, and a
mail with a fresh unsubscribe link goes to it for each list it is subscribed to.
The answer is the same whatever the address (known, unknown, withdrawn,
invalid): only the mailbox's owner learns anything, by reading their mail.
A request counts against the address's OPTIN_MAILS_PER_ADDRESS_PER_DAY (shared
with the confirmation mails), so the form cannot be used to flood a mailbox.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from optin.config import Settings
from optin.consent import ledger, mailcap
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

log = logging.getLogger(__name__)


def request_unsubscribe_link(raw_address: str, settings: Settings) -> None:
    """Queue a mail with a fresh unsubscribe link for every confirmed subscription of the
    address (committed). Says nothing back, by design. A pending signup gets none: it
    receives no newsletter to leave, and its link expires."""
    try:
        email = normalize_email(raw_address or "")
    except InvalidAddress:
        return
    digest = address_hash(email, settings.hash_key)
    now = utcnow()
    subs = list(db.session.scalars(
        select(Subscription)
        .where(Subscription.email_hash == digest,
               Subscription.status == SubscriptionStatus.CONFIRMED)
        .order_by(Subscription.id).with_for_update()))
    if not subs or not mailcap.take_address_mail(digest, settings):
        db.session.rollback()
        return
    for sub in subs:
        ledger.append(sub, EventKind.UNSUBSCRIBE_LINK_REQUESTED, origin="link", at=now)
        db.session.add(OutboxItem.pending(OutboxKind.UNSUBSCRIBE_LINK_MAIL,
                                          subscription_id=sub.id, now=now))
    db.session.commit()
    log.info("fresh unsubscribe link queued for %d subscription(s)", len(subs))
