"""The shared ActiveCampaign throttle: all workers together stay under the account's
5 requests a second, through the database or Redis, against the fake that enforces it."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from optin import create_app
from optin.activecampaign.client import ActiveCampaignClient
from optin.activecampaign.throttle import DatabaseThrottle, RedisThrottle, Throttle, shared_throttle
from optin.config import RedisKind, Settings, SharedStorage, current_settings
from optin.consent import subscriptions
from optin.consent.addresses import address_hash
from optin.delivery import outbox
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import JobState, OutboxItem, Subscription, utcnow

from ..conftest import free_port

REDIS_URL = "redis://127.0.0.1:6379/5"


def _redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    return client


@pytest.fixture
def redis_config(ac_config):
    """ac_config with the limiter in Redis."""
    _redis()
    ac_config["OPTIN_RATELIMIT_STORAGE_URL"] = REDIS_URL
    return ac_config


def _queue_subscribes(app, list_id: int, count: int) -> list[str]:
    """Confirmed subscriptions with their ac_subscribe queued, as a confirmation leaves them."""
    emails = [f"reader{i:03}@example.org" for i in range(count)]
    with app.app_context():
        key, now = current_settings().hash_key, utcnow()
        for email in emails:
            sub = Subscription(list_id=list_id, status="confirmed", email=email,
                               email_hash=address_hash(email, key), locale="de",
                               nonce=subscriptions.new_nonce(), confirmed_at=now)
            db.session.add(sub)
            db.session.flush()
            db.session.add(OutboxItem.pending("ac_subscribe", subscription_id=sub.id))
        db.session.commit()
    return emails


def _drain_in_parallel(apps) -> list[int]:
    """One worker per app (like one per process: own engine, own client), all at once."""
    delivered = [0] * len(apps)

    def run(i: int) -> None:
        worker = Worker(apps[i], batch=3)
        with apps[i].app_context():
            # Until the queue is empty, not until one claim comes back empty: on SQLite the
            # other worker may just have taken the rows this one saw.
            while outbox.backlog()["pending"]:
                handled = worker.run_once()
                delivered[i] += handled
                if not handled:
                    time.sleep(0.05)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(apps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return delivered


def _dispose(app) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_two_workers_never_exceed_the_rate_limit(ac_newsletter, ac_app, ac_config, fake_ac):
    emails = _queue_subscribes(ac_app, ac_newsletter["id"], 30)
    other = create_app(dict(ac_config))  # a second worker process's app
    try:
        delivered = _drain_in_parallel([ac_app, other])
    finally:
        _dispose(other)

    assert fake_ac.rate_limited == 0
    assert min(delivered) > 0 and sum(delivered) == 30  # both took part
    assert [fake_ac.contact_status(e, 1) for e in emails] == [1] * 30
    assert len(fake_ac.requests) == 60
    with ac_app.app_context():  # the schedule lived in the database
        assert db.session.scalar(select(JobState.name).where(JobState.name.like("ac-throttle:%")))


def test_two_workers_share_the_limit_through_redis(redis_config, ac_newsletter, ac_app, fake_ac):
    emails = _queue_subscribes(ac_app, ac_newsletter["id"], 15)
    other = create_app(dict(redis_config))
    try:
        delivered = _drain_in_parallel([ac_app, other])
    finally:
        _dispose(other)

    assert fake_ac.rate_limited == 0
    assert min(delivered) > 0 and sum(delivered) == 15
    assert [fake_ac.contact_status(e, 1) for e in emails] == [1] * 15
    with ac_app.app_context():  # not in the database this time
        assert db.session.scalar(select(JobState.name).where(JobState.name.like("ac-throttle:%"))) \
            is None


def test_without_a_shared_throttle_the_limit_is_exceeded(fake_ac):
    """The fake does enforce the limit, so the tests above can fail."""
    clients = [ActiveCampaignClient(fake_ac.url, fake_ac.api_key) for _ in range(2)]
    errors: list[Exception] = []

    def hammer(ac: ActiveCampaignClient) -> None:
        for _ in range(6):
            try:
                ac.get_list(1)
            except Exception as exc:  # noqa: BLE001 - the 429s are the point
                errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for c in clients:
        c.close()
    assert fake_ac.rate_limited > 0 and errors


def test_database_slots_are_one_interval_apart(app):
    with app.app_context():
        throttle = DatabaseThrottle(db.engine, "ac-throttle:test", rate=4)
        waits, slots = [], []
        for _ in range(5):
            waits.append(throttle.reserve())
            slots.append(db.session.get(JobState, "ac-throttle:test",
                                        populate_existing=True).value["next_at"])
            db.session.rollback()
    assert waits[0] == 0 and all(0 < w <= 1.0 for w in waits[1:])
    assert [round(b - a, 6) for a, b in zip(slots, slots[1:], strict=False)] == [0.25] * 4


def test_redis_slots_are_one_interval_apart():
    client = _redis()
    key = f"optin-test:throttle:{threading.get_ident()}:{utcnow().timestamp()}"
    try:
        throttle = RedisThrottle(lambda: client, key, rate=4)
        waits, slots = [], []
        for _ in range(5):
            waits.append(throttle.reserve())
            slots.append(float(client.get(key)))
        assert waits[0] == 0 and all(0 < w <= 1.0 for w in waits[1:])
        assert [round(b - a, 6) for a, b in zip(slots, slots[1:], strict=False)] == [0.25] * 4
        assert 0 < client.pttl(key) <= 3000  # the key cleans itself up
    finally:
        client.delete(key)


def test_an_unreachable_limiter_does_not_stop_the_sync(caplog):
    throttle = RedisThrottle(lambda: redis.Redis.from_url("redis://127.0.0.1:1/5", socket_timeout=0.5),
                             "optin-test:unreachable", rate=4)
    with caplog.at_level(logging.WARNING):
        throttle()  # no exception: ActiveCampaign's own 429s are retried by the outbox
    assert "calling unpaced" in caplog.text


class _Schedule(Throttle):
    """The slot arithmetic of the shared schedule on a fake clock: no Redis needed."""

    def __init__(self, rate: float, oversleep: list[float]) -> None:
        self.now, self.next_slot, self.reserved = 0.0, 0.0, 0
        self._oversleep = oversleep
        super().__init__(rate, sleep=self._sleep_fake, clock=lambda: self.now)

    def _sleep_fake(self, seconds: float) -> None:
        self.now += seconds + (self._oversleep.pop(0) if self._oversleep else 0.0)

    def reserve(self) -> float:
        self.reserved += 1
        slot = max(self.next_slot, self.now)
        self.next_slot = slot + self.interval
        return slot - self.now


def test_a_caller_that_wakes_up_late_takes_a_new_slot():
    throttle = _Schedule(rate=4, oversleep=[0.3])  # the second caller's sleep overruns
    sent = []
    for _ in range(3):
        throttle()
        sent.append(throttle.now)
    # The late caller gave its slot (0.25) up and took a fresh one when it woke (0.55): the
    # call after it keeps a full interval's distance, so six can't bunch into one second.
    assert throttle.reserved == 4
    assert sent == pytest.approx([0.0, 0.55, 0.8])


def test_a_slightly_late_caller_keeps_its_slot():
    throttle = _Schedule(rate=4, oversleep=[0.05])  # within a quarter interval
    for _ in range(2):
        throttle()
    assert throttle.reserved == 2 and throttle.now == pytest.approx(0.3)


@contextlib.contextmanager
def _redis_server(tmp_path: Path, *args: str) -> Iterator[Path]:
    """A redis-server of this test's own (Debian's redis-server), stopped afterwards; yields
    its log file."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server")
    log = tmp_path / f"redis-{len(list(tmp_path.glob('redis-*.log')))}.log"
    proc = subprocess.Popen(["redis-server", *args, "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path), "--logfile", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait(check, log: Path | None = None, timeout: float = 30.0) -> None:  # noqa: ANN001
    """Until ``check()`` is true; a loaded machine (CI) can take seconds to start a cluster."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    said = log.read_text()[-1500:] if log is not None and log.exists() else ""
    raise AssertionError(f"redis-server did not come up; its log ends:\n{said}")


def _paced_through(url: str, tmp_path: Path, key_store: redis.Redis) -> None:
    """The throttle config builds for ``url`` keeps its schedule in that Redis."""
    settings = Settings.from_env({"OPTIN_RATELIMIT_STORAGE_URL": url}, tmp_path)
    throttle = shared_throttle(settings.shared_storage, None, "acct.example", rate=4)
    assert isinstance(throttle, RedisThrottle)
    waits = [throttle.reserve() for _ in range(3)]
    assert waits[0] == 0 and 0 < waits[1] < waits[2] <= 1.0
    assert key_store.get("optin:ac-throttle:acct.example") is not None


def test_a_redis_socket_paces_through_redis(tmp_path):
    socket_path = tmp_path / "redis.sock"
    with _redis_server(tmp_path, "--port", "0", "--unixsocket", str(socket_path)):
        store = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1)
        _wait(store.ping)
        _paced_through(f"redis+unix://{socket_path}", tmp_path, store)


def test_redis_sentinels_pace_through_their_master(tmp_path):
    master_port, sentinel_port = free_port(), free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nsentinel monitor optin-test 127.0.0.1 {master_port} 1\n")
    with _redis_server(tmp_path, "--port", str(master_port)), \
            _redis_server(tmp_path, str(conf), "--sentinel", "--port", str(sentinel_port)):
        master = redis.Redis(port=master_port, socket_timeout=1)
        _wait(master.ping)
        _wait(redis.Redis(port=sentinel_port, socket_timeout=1).ping)
        _paced_through(f"redis+sentinel://127.0.0.1:{sentinel_port}/optin-test", tmp_path, master)


def test_a_redis_cluster_paces_through_the_cluster(tmp_path):
    # The cluster bus gets a free port of its own: by default it is the port + 10000, which
    # for a high free port is past 65535 or taken, and the node never comes up (seen in CI).
    port, bus_port = free_port(), free_port()
    with _redis_server(tmp_path, "--port", str(port), "--cluster-port", str(bus_port),
                       "--cluster-enabled", "yes",
                       "--cluster-config-file", str(tmp_path / "nodes.conf")) as log:
        node = redis.Redis(port=port, socket_timeout=1)
        _wait(node.ping, log)
        node.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        _wait(lambda: b"cluster_state:ok" in node.execute_command("CLUSTER", "INFO"), log)
        _paced_through(f"redis+cluster://127.0.0.1:{port}", tmp_path, node)


def test_memory_counts_pace_through_the_database(tmp_path):
    settings = Settings.from_env({}, tmp_path)
    assert isinstance(shared_throttle(settings.shared_storage, None, "acct", rate=4), DatabaseThrottle)


def test_an_unreachable_cluster_at_start_up_leaves_calls_unpaced(caplog):
    throttle = shared_throttle(SharedStorage(RedisKind.CLUSTER, nodes=(("127.0.0.1", 1),)),
                               None, "acct", rate=4)
    with caplog.at_level(logging.WARNING):
        throttle()  # made lazily: the first call finds the cluster down, and goes on
    assert "calling unpaced" in caplog.text
