"""The per-IP budgets (ops.ratelimits): every limit of a budget checked and counted in one
Redis round trip, each budget apart."""

from __future__ import annotations

import pytest
import redis

from optin.config import Settings
from optin.ops.ratelimits import LINKS, PREFIX, SIGNUP, IPLimits

REDIS_URL = "redis://127.0.0.1:6379/12"  # this branch's own Redis database


@pytest.fixture
def own_redis():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    client.flushdb()
    yield client
    client.flushdb()


def _limit(tmp_path, url: str) -> IPLimits:
    settings = Settings.from_env({"OPTIN_RATELIMIT_SIGNUP": "3/minute;5/hour",
                                  "OPTIN_RATELIMIT_LINKS": "2/minute",
                                  "OPTIN_RATELIMIT_STORAGE_URL": url,
                                  "OPTIN_SECRET_KEY": "s" * 32}, tmp_path)
    return IPLimits(settings)


def test_two_limits_cost_one_round_trip_and_a_refusal_spends_nothing(tmp_path, own_redis):
    limit = _limit(tmp_path, REDIS_URL)
    client = limit.script().registered_client
    calls: list[object] = []
    original = client.execute_command
    client.execute_command = lambda *a, **k: calls.append(a[0]) or original(*a, **k)

    assert [limit.take(SIGNUP, "198.51.100.1") for _ in range(3)] == [None, None, None]
    assert len(calls) == 3  # one EVALSHA per signup for both limits
    waits = [limit.take(SIGNUP, "198.51.100.1") for _ in range(2)]
    assert all(w is not None and 1 <= w <= 60 for w in waits)
    assert limit.take(SIGNUP, "198.51.100.2") is None  # another IP is not affected
    assert len(calls) == 6
    hourly = [k for k in own_redis.scan_iter(f"{PREFIX}:{{signup:198.51.100.1}}:5/3600:*")]
    assert [int(own_redis.get(k)) for k in hourly] == [3]  # the refused two were not counted


def test_budgets_count_apart(tmp_path, own_redis):
    """The links budget of an IP whose signups are spent is its own, and the other way round."""
    limit = _limit(tmp_path, REDIS_URL)
    assert [limit.take(SIGNUP, "198.51.100.3") for _ in range(3)] == [None, None, None]
    assert limit.take(SIGNUP, "198.51.100.3") is not None
    assert [limit.take(LINKS, "198.51.100.3") is None for _ in range(3)] == [True, True, False]
    assert limit.take(LINKS, "198.51.100.4") is None


def test_memory_storage_counts_in_process(tmp_path):
    limit = _limit(tmp_path, "memory://")
    assert [limit.take(SIGNUP, "203.0.113.5") is None for _ in range(4)] == [True, True, True, False]
    assert [limit.take(LINKS, "203.0.113.5") is None for _ in range(3)] == [True, True, False]


def test_an_unreachable_redis_lets_the_signup_through(tmp_path, caplog):
    limit = _limit(tmp_path, "redis://127.0.0.1:1/0")
    assert limit.take(SIGNUP, "203.0.113.6") is None
    assert "signup rate limit unavailable" in caplog.text
