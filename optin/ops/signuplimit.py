"""The per-IP signup limit in one Redis round trip.

``OPTIN_RATELIMIT_SIGNUP`` may name several limits (``10/minute;100/hour``).
Flask-Limiter checks each with its own Redis call, plus its per-request
bookkeeping; on the signup, the hottest route, every limit is checked and
counted by one Lua script instead (sliding window counters, the strategy
Flask-Limiter uses for the other routes): all limits are tested, and only if
every one allows the request are all counted, atomically, so a refused
request spends nothing. The count is per client IP (``ratelimits.client_key``)
and lives where the other limits' do, so it holds across hosts; with
``memory://`` it is counted in process by the ``limits`` library.

If Redis is unreachable the signup goes through (logged), as with the other
limits: a Redis outage must not lose signups.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import redis
from flask import Flask, Response, current_app
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from optin.config import Settings
from optin.ops.problems import error_response

log = logging.getLogger(__name__)

EXTENSION = "optin.signup_limit"
PREFIX = "optin:signup-ip"

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


class SignupLimit:
    """The app's per-IP signup limits and where they are counted."""

    def __init__(self, settings: Settings) -> None:
        self.items: list[RateLimitItem] = parse_many(settings.ratelimit_signup)
        self.script: Any = None
        self.counter: SlidingWindowCounterRateLimiter | None = None
        if settings.shared_storage is not None:
            client = redis.Redis.from_url(settings.ratelimit_storage_url,
                                          socket_timeout=2, socket_connect_timeout=2)
            self.script = client.register_script(SCRIPT)
        else:
            self.counter = SlidingWindowCounterRateLimiter(
                storage_from_string(settings.ratelimit_storage_url))

    def take(self, key: str) -> int | None:
        """Count one signup from ``key`` if every limit allows it: None; else the seconds
        until it would be allowed (at least 1, at most the longest window)."""
        try:
            wait = self._redis(key) if self.script is not None else self._memory(key)
        except Exception as exc:  # the storage is down: let the signup in
            log.warning("signup rate limit unavailable (%s); request let through",
                        type(exc).__name__)
            return None
        if wait <= 0:
            return None
        longest = max(item.get_expiry() for item in self.items)
        return min(longest, max(1, math.ceil(wait)))

    def _redis(self, key: str) -> float:
        now = time.time()
        keys: list[str] = []
        args: list[float | int] = [now]
        for item in self.items:
            window = item.get_expiry()
            index = int(now // window)
            base = f"{PREFIX}:{key}:{item.amount}/{window}"
            keys += [f"{base}:{index}", f"{base}:{index - 1}"]
            args += [item.amount, window]
        return float(self.script(keys=keys, args=args))

    def _memory(self, key: str) -> float:
        assert self.counter is not None
        refused = [item for item in self.items if not self.counter.test(item, PREFIX, key)]
        if refused:
            return max(self.counter.get_window_stats(item, PREFIX, key).reset_time - time.time()
                       for item in refused)
        for item in self.items:
            self.counter.hit(item, PREFIX, key)
        return 0.0


def refused(seconds: int) -> Response:
    """The 429 every limit answers (problem+json, or the page for a browser's form)."""
    log.info("rate limit reached on the signup")
    return error_response(429, "Too Many Requests",
                          f"Too many requests from your network. Please try again in "
                          f"{seconds} seconds.", headers={"Retry-After": str(seconds)})


def init_app(app: Flask, settings: Settings) -> None:
    """Give the app its own signup limit (and counter storage, like the other limits)."""
    app.extensions[EXTENSION] = SignupLimit(settings)


def take(key: str) -> int | None:
    """:meth:`SignupLimit.take` of the current app."""
    limit: SignupLimit = current_app.extensions[EXTENSION]
    return limit.take(key)
