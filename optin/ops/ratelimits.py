"""Abuse limits: requests per client IP on the public routes, each in one Redis round trip.

A public signup form is attacked from day one. One IP hammering ``POST
/v1/subscriptions``, the confirm/unsubscribe links (scanners, token guessing)
or the webhook is counted per client IP (:func:`client_key`:
``request.remote_addr`` after ProxyFix applied ``OPTIN_TRUSTED_PROXIES``; IPv6
per /64, the block one subscriber gets) and answered ``429`` with
``Retry-After``: problem+json for the API, the friendly page for browsers. Each
budget is an ``OPTIN_RATELIMIT_*`` setting and may name several limits
(``10/minute;100/hour``). (One address targeted from many IPs is a rule of the
state machine: ``consent.mailcap``.)

Every limit of a budget is checked and counted by one Lua script, in one round
trip (sliding window counters: the previous window's count weighted by how much
of it still overlaps, plus the current one's): all limits are tested, and only
if every one allows the request are all counted, atomically, so a refused
request spends nothing. The counts live in ``OPTIN_RATELIMIT_STORAGE_URL``'s
Redis (a server, a socket, sentinels or a cluster: one budget's keys share a
hash slot), so they hold across hosts; with ``memory://`` they are counted in
process by the ``limits`` library. Nothing else runs per request: routes
without a budget pay nothing for the others.

If Redis is unreachable the request goes through (logged): a Redis outage must
not lose signups.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from typing import Any

import redis
from flask import Flask, Response, current_app, request
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from optin.config import RedisKind, Settings, SharedStorage
from optin.ops.problems import error_response

log = logging.getLogger(__name__)

EXTENSION = "optin.ratelimits"
PREFIX = "optin:ip-limit"
#: The budgets and the settings that set them.
SIGNUP, LINKS, WEBHOOK = "signup", "links", "webhook"
# A Redis that does not answer within this lets the request through rather than hold it.
REDIS_TIMEOUT_SECONDS = 2.0

# KEYS: per limit, its current and its previous window's counter.
# ARGV: the time (seconds, float), then per limit its amount and window (seconds).
# Returns 0 when the request is allowed (and counted), else the seconds to wait.
SCRIPT = """
local now = tonumber(ARGV[1])
local wait = 0
for i = 1, #KEYS / 2 do
  local amount = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local elapsed = now % window
  if previous * (window - elapsed) / window + current + 1 > amount then
    wait = math.max(wait, window - elapsed)
  end
end
if wait > 0 then
  return tostring(wait)
end
for i = 1, #KEYS / 2 do
  redis.call('INCR', KEYS[2 * i - 1])
  redis.call('EXPIRE', KEYS[2 * i - 1], 2 * tonumber(ARGV[2 * i + 1]))
end
return '0'
"""


def redis_client(storage: SharedStorage) -> Any:
    """A redis-py client for the storage: a server, the sentinels' master, or a cluster."""
    if storage.kind is RedisKind.SENTINEL:
        assert storage.service_name
        sentinel = Sentinel(list(storage.nodes), socket_timeout=REDIS_TIMEOUT_SECONDS,
                            username=storage.username, password=storage.password,
                            sentinel_kwargs={"username": storage.username,
                                             "password": storage.password,
                                             "socket_timeout": REDIS_TIMEOUT_SECONDS})
        return sentinel.master_for(storage.service_name, socket_timeout=REDIS_TIMEOUT_SECONDS)
    if storage.kind is RedisKind.CLUSTER:
        return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in storage.nodes],
                            username=storage.username, password=storage.password,
                            socket_timeout=REDIS_TIMEOUT_SECONDS)
    return redis.Redis.from_url(storage.url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                socket_connect_timeout=REDIS_TIMEOUT_SECONDS)


class IPLimits:
    """An app's per-IP budgets and where they are counted."""

    def __init__(self, settings: Settings) -> None:
        self.budgets: dict[str, list[RateLimitItem]] = {
            SIGNUP: parse_many(settings.ratelimit_signup),
            LINKS: parse_many(settings.ratelimit_links),
            WEBHOOK: parse_many(settings.ratelimit_webhook),
        }
        self.storage = settings.shared_storage
        self._script: Any = None
        self.counter: SlidingWindowCounterRateLimiter | None = None
        if self.storage is None:
            self.counter = SlidingWindowCounterRateLimiter(
                storage_from_string(settings.ratelimit_storage_url))

    def take(self, budget: str, key: str) -> int | None:
        """Count one request from ``key`` against ``budget`` if every one of its limits
        allows it: None; else the seconds until it would be allowed (at least 1, at most
        the longest window)."""
        items = self.budgets[budget]
        try:
            wait = (self._redis(items, budget, key) if self.storage is not None
                    else self._memory(items, budget, key))
        except Exception as exc:  # the storage is down: let the request in
            log.warning("%s rate limit unavailable (%s); request let through", budget,
                        type(exc).__name__)
            return None
        if wait <= 0:
            return None
        longest = max(item.get_expiry() for item in items)
        return min(longest, max(1, math.ceil(wait)))

    def script(self) -> Any:
        """The registered Lua script, its client made on first use: a cluster's client
        connects when made, and a Redis down at start-up must not stop the app."""
        if self._script is None:
            assert self.storage is not None
            self._script = redis_client(self.storage).register_script(SCRIPT)
        return self._script

    def _redis(self, items: list[RateLimitItem], budget: str, key: str) -> float:
        now = time.time()
        keys: list[str] = []
        args: list[float | int] = [now]
        for item in items:
            window = item.get_expiry()
            index = int(now // window)
            # {…}: a cluster keeps one budget's keys for one client in one hash slot.
            base = f"{PREFIX}:{{{budget}:{key}}}:{item.amount}/{window}"
            keys += [f"{base}:{index}", f"{base}:{index - 1}"]
            args += [item.amount, window]
        return float(self.script()(keys=keys, args=args))

    def _memory(self, items: list[RateLimitItem], budget: str, key: str) -> float:
        assert self.counter is not None
        refused = [item for item in items if not self.counter.test(item, PREFIX, budget, key)]
        if refused:
            return max(self.counter.get_window_stats(item, PREFIX, budget, key).reset_time
                       - time.time() for item in refused)
        for item in items:
            self.counter.hit(item, PREFIX, budget, key)
        return 0.0


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


def take(budget: str) -> int | None:
    """:meth:`IPLimits.take` of the current app for the current request's client."""
    limits: IPLimits = current_app.extensions[EXTENSION]
    return limits.take(budget, client_key())


def refused(budget: str, seconds: int) -> Response:
    """The 429 every budget answers (problem+json, or the page for a browser)."""
    log.info("rate limit %s reached on %s", budget, request.endpoint)
    return error_response(429, "Too Many Requests",
                          f"Too many requests from your network. Please try again in "
                          f"{seconds} seconds.", headers={"Retry-After": str(seconds)})


def check(budget: str) -> Response | None:
    """Count the request against ``budget``: None if allowed, else the 429 to answer."""
    wait = take(budget)
    return None if wait is None else refused(budget, wait)


def init_app(app: Flask, settings: Settings) -> None:
    """Give the app its own budgets (and counter storage, one per app: tests, or two apps
    in one process standing for two hosts, count apart unless they share a Redis)."""
    app.extensions[EXTENSION] = IPLimits(settings)
