"""Outbox handlers that carry consent to ActiveCampaign.

Both handlers decide from the subscription's state when they run, not from
the state when they were queued: an ``ac_subscribe`` that finds the
subscription withdrawn does nothing, so an unsubscribe always wins.
"""

from __future__ import annotations

import logging

from . import ledger, outbox
from .config import current_settings
from .extensions import db
from .models import OutboxItem, Subscription, SubscriptionStatus

log = logging.getLogger(__name__)
S = SubscriptionStatus


def _skip(sub: Subscription, action: str) -> None:
    log.info("ActiveCampaign dry-run: would %s subscription %s", action, sub.id)
    ledger.append(sub, "sync_skipped", origin="activecampaign",
                  details={"action": action, "reason": "dry-run (OPTIN_AC_URL unset)"})


@outbox.handler("ac_subscribe")
def push_subscribe(item: OutboxItem) -> None:
    sub = db.session.get(Subscription, item.subscription_id, with_for_update=True)
    if sub is None or sub.status != S.CONFIRMED:
        return
    if current_settings().ac_dry_run:
        _skip(sub, "subscribe")
        return
    raise outbox.PermanentFailure("ActiveCampaign sync is not configured in this build")


@outbox.handler("ac_unsubscribe")
def push_unsubscribe(item: OutboxItem) -> None:
    sub = db.session.get(Subscription, item.subscription_id, with_for_update=True)
    if sub is None or sub.status in S.ACTIVE:
        return
    if current_settings().ac_dry_run:
        _skip(sub, "unsubscribe")
        return
    raise outbox.PermanentFailure("ActiveCampaign sync is not configured in this build")
