"""Abuse limits: requests per client IP on the public routes.

A public signup form is attacked from day one. One IP hammering ``POST
/v1/subscriptions``, the confirm/unsubscribe links (scanners, token guessing)
or the webhook is counted by Flask-Limiter per client IP (``request.remote_addr``
after ProxyFix applied ``OPTIN_TRUSTED_PROXIES``; IPv6 per /64, the block one
subscriber gets) and answered ``429`` with ``Retry-After``: problem+json for
the API, the friendly page for browsers. The limits are the
``OPTIN_RATELIMIT_*`` settings. (One address targeted from many IPs is a rule
of the state machine: ``consent.mailcap``.)

Counts live in the limiter's storage (``OPTIN_RATELIMIT_STORAGE_URL``):
``memory://`` for one process, Redis to share them between hosts. If the
storage is unreachable, requests go through (logged): a Redis outage must not
lose signups.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time

from flask import Flask, Response, request
from flask_limiter import RateLimitExceeded

from optin.config import current_settings
from optin.extensions import limiter
from optin.ops.problems import error_response

log = logging.getLogger(__name__)


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


def links_limit() -> str:
    return current_settings().ratelimit_links


def webhook_limit() -> str:
    return current_settings().ratelimit_webhook


def retry_after_seconds() -> int:
    """Seconds until the breached limit lets this client in again: at least 1, at most the
    limit's window (a sliding window's reset time, rounded up, can lie a second past it)."""
    current = limiter.current_limit
    if current is None:
        return 60
    window = current.limit.get_expiry()
    return min(window, max(1, math.ceil(current.reset_at - time.time())))


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
