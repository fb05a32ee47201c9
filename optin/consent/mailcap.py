"""The per-address mail cap: confirmation mails one address gets in 24 hours.

One address targeted from many IPs (subscription bombing) gets at most
``OPTIN_MAILS_PER_ADDRESS_PER_DAY`` confirmation mails, whatever the IP or the
list. The cap is invisible: a signup over it is answered like any other and
queues no mail, so the answer reveals nothing about the address.

Counts live where the rate limits' do (``OPTIN_RATELIMIT_STORAGE_URL``):
``memory://`` for one process, Redis to share them between hosts. The key is
the keyed address hash, never the address. The ``limits`` library (the one
Flask-Limiter counts with) is used directly: this is a rule of the consent
state machine, not of HTTP.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app
from limits import RateLimitItemPerDay
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from optin.config import Settings

log = logging.getLogger(__name__)

EXTENSION = "optin.mailcap"
# Where the per-address counts live in the storage (after the key prefix).
SCOPE = "confirmation-mails-per-address"


def init_app(app: Flask, settings: Settings) -> None:
    """Open this app's own counter storage (one per app, like the rate limits')."""
    storage = storage_from_string(settings.ratelimit_storage_url)
    app.extensions[EXTENSION] = SlidingWindowCounterRateLimiter(storage)


def take_address_mail(email_hash: str, settings: Settings) -> bool:
    """Count one confirmation mail to the address; False when its daily cap is reached.

    Atomic in the shared storage, so hosts racing for the last mail cannot both
    win. Called only when a mail is about to be queued. If the storage is
    unreachable the mail goes out (logged): a Redis outage must not lose signups.
    """
    counter: SlidingWindowCounterRateLimiter = current_app.extensions[EXTENSION]
    item = RateLimitItemPerDay(settings.mails_per_address_per_day)
    try:
        return counter.hit(item, "optin", SCOPE, email_hash)
    except Exception as exc:  # the storage is down: mail rather than lose the signup
        log.warning("per-address mail limit unavailable (%s); mailing anyway", type(exc).__name__)
        return True
