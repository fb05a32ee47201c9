"""Abuse limits: requests per client IP on the public routes, mails per address.

A public signup form is attacked from day one. Three things are limited:

- **One IP hammering** ``POST /v1/subscriptions``, the confirm/unsubscribe
  links (scanners, token guessing) or the webhook: Flask-Limiter counts
  requests per client IP (``request.remote_addr`` after ProxyFix applied
  ``OPTIN_TRUSTED_PROXIES``; IPv6 per /64, the block one subscriber gets) and
  answers ``429`` with ``Retry-After``: problem+json for the API, the friendly
  page for browsers. The limits are the ``OPTIN_RATELIMIT_*`` settings.
- **One address targeted from many IPs** (subscription bombing): at most
  ``OPTIN_MAILS_PER_ADDRESS_PER_DAY`` confirmation mails to one address in 24
  hours, whatever the IP or list. This limit is invisible: a signup over it is
  answered exactly like any other and simply queues no mail, so the answer
  reveals nothing about the address. It adds to the per-subscription
  ``OPTIN_RESEND_INTERVAL_MINUTES``: a repeat signup inside the interval gets
  no mail and does not count here.

Counts live in the limiter's storage (``OPTIN_RATELIMIT_STORAGE_URL``):
``memory://`` for one process, Redis to share them between hosts. The
per-address counter is keyed by the keyed address hash, never the address. If
the storage is unreachable, requests and mails go through (logged): a Redis
outage must not lose signups.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time

from flask import Flask, Response, request
from flask_limiter import RateLimitExceeded
from limits import RateLimitItemPerDay

from .config import Settings, current_settings
from .extensions import limiter
from .problems import error_response

log = logging.getLogger(__name__)

# Where the per-address counts live in the limiter's storage (after its key prefix).
ADDRESS_SCOPE = "confirmation-mails-per-address"


def client_key() -> str:
    """The client IP as counted: IPv4 as is, IPv6 by its /64 network."""
    raw = request.remote_addr or ""
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return raw or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def signup_limit() -> str:
    return current_settings().ratelimit_signup


def links_limit() -> str:
    return current_settings().ratelimit_links


def webhook_limit() -> str:
    return current_settings().ratelimit_webhook


def take_address_mail(email_hash: str, settings: Settings) -> bool:
    """Count one confirmation mail to the address; False when its daily cap is reached.

    Atomic in the shared storage, so hosts racing for the last mail cannot both
    win. Called only when a mail is about to be queued.
    """
    item = RateLimitItemPerDay(settings.mails_per_address_per_day)
    try:
        return limiter.limiter.hit(item, "optin", ADDRESS_SCOPE, email_hash)
    except Exception as exc:  # the storage is down: mail rather than lose the signup
        log.warning("per-address mail limit unavailable (%s); mailing anyway", type(exc).__name__)
        return True


def retry_after_seconds() -> int:
    """Seconds until the breached limit lets this client in again (at least 1)."""
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, math.ceil(current.reset_at - time.time()))


def too_many_requests(exc: RateLimitExceeded) -> Response:
    seconds = retry_after_seconds()
    log.info("rate limit %s reached on %s", exc.description, request.endpoint)
    return error_response(429, "Too Many Requests",
                          f"Too many requests from your network. Please try again in "
                          f"{seconds} seconds.", headers={"Retry-After": str(seconds)})


def init_app(app: Flask) -> None:
    """Bind the limiter (its storage is the app's own) and answer its 429s."""
    limiter.init_app(app)
    app.register_error_handler(RateLimitExceeded, too_many_requests)
