"""The per-address mail cap: confirmation mails one address gets in 24 hours.

One address targeted from many IPs (subscription bombing) gets at most
``OPTIN_MAILS_PER_ADDRESS_PER_DAY`` confirmation mails, whatever the IP or the
list. The cap is invisible: a signup over it is answered like any other and
queues no mail, so the answer reveals nothing about the address.

Counts live where the rate limits' do (``OPTIN_RATELIMIT_STORAGE_URL``):
``memory://`` for one process, Redis to share them between hosts. The key is
the keyed address hash, never the address. The ``limits`` library (the one
the per-IP limits count with in memory) is used directly: this is a rule of the
consent state machine, not of HTTP.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app
from limits import RateLimitItemPerDay
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from optin.config import Settings
from optin.extensions import after_commit

log = logging.getLogger(__name__)

EXTENSION = "optin.mailcap"
# Where the per-address counts live in the storage (after the key prefix).
SCOPE = "confirmation-mails-per-address"


def init_app(app: Flask, settings: Settings) -> None:
    """Open this app's own counter storage (one per app, like the rate limits')."""
    storage = storage_from_string(settings.ratelimit_storage_url)
    app.extensions[EXTENSION] = SlidingWindowCounterRateLimiter(storage)


def take_address_mail(email_hash: str, settings: Settings) -> bool:
    """Whether a confirmation mail to the address fits in its daily cap; if so, it is
    counted when the caller's transaction commits.

    Only what was committed counts: a signup that rolls back (a database cut, a 503)
    spends nothing of the address's budget. The price is a window as long as one
    transaction in which two hosts racing for the last mail may both get it; the cap is
    an abuse limit, and the per-subscription resend interval still holds. If the storage
    is unreachable the mail goes out (logged): a Redis outage must not lose signups.
    """
    counter: SlidingWindowCounterRateLimiter = current_app.extensions[EXTENSION]
    item = RateLimitItemPerDay(settings.mails_per_address_per_day)
    try:
        allowed = counter.test(item, "optin", SCOPE, email_hash)
    except Exception as exc:  # the storage is down: mail rather than lose the signup
        log.warning("per-address mail limit unavailable (%s); mailing anyway", type(exc).__name__)
        return True
    if allowed:
        after_commit(lambda: _count(counter, item, email_hash))
    return allowed


def _count(counter: SlidingWindowCounterRateLimiter, item: RateLimitItemPerDay,
           email_hash: str) -> None:
    try:
        counter.hit(item, "optin", SCOPE, email_hash)
    except Exception as exc:  # the storage went away after the commit: this mail is not counted
        log.warning("per-address mail limit unavailable (%s); mail not counted", type(exc).__name__)
