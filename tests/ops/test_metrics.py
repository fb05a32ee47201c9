"""GET /metrics: counters move by exactly what happened; the backlog comes from the database."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import requests
import time_machine
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from optin import create_app
from optin.config import ConfigError
from optin.extensions import db
from optin.models import AuditEntry, MailingList, OutboxItem
from optin.ops import metrics

from ..conftest import ADMIN_TOKEN, deliver, free_port, links, make_config, signup, wait_for


def scrape(client) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``GET /metrics`` as {(name, labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return _parse(response.get_data(as_text=True))


def _parse(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def increase(before, after, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_flow_counters(app, client, newsletter, mailbox, signed_up):
    before = scrape(client)
    confirm = signed_up("metrics-anna@example.org")
    assert client.post(confirm).status_code == 303
    deliver(app)
    welcome = mailbox.to("metrics-anna@example.org")[-1]
    assert client.post(links(welcome)["unsubscribe"],
                       data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert client.post(links(welcome)["unsubscribe"]).status_code == 303  # repeated: no count
    assert signup(client, "metrics-bot@example.org", website="http://spam").status_code == 202
    after = scrape(client)

    assert increase(before, after, "optin_signups_total", list="newsletter", outcome="new") == 1
    assert increase(before, after, "optin_signups_total", list="-", outcome="honeypot") == 1
    assert increase(before, after, "optin_confirmations_total", list="newsletter") == 1
    assert increase(before, after, "optin_unsubscribes_total",
                    origin="one_click", kind="unsubscribed") == 1
    assert increase(before, after, "optin_unsubscribes_total",
                    origin="link", kind="unsubscribed") == 0
    assert increase(before, after, "optin_mail_deliveries_total", template="confirm") == 1
    assert increase(before, after, "optin_mail_deliveries_total", template="welcome") == 1
    assert "metrics-anna" not in client.get("/metrics").get_data(as_text=True)


def test_a_signup_that_fails_validation_counts_nothing(client, newsletter):
    before = scrape(client)
    assert signup(client, "not an address").status_code == 422
    after = scrape(client)
    signups = {k: v for k, v in after.items() if k[0] == "optin_signups_total"}
    assert signups == {k: v for k, v in before.items() if k[0] == "optin_signups_total"}


def test_refused_operator_calls_are_counted_by_reason_never_audited(app, client, caplog):
    before = scrape(client)
    assert value(before, "optin_operator_refused_total", reason="missing") == 0
    assert ("optin_operator_refused_total", frozenset({("reason", "invalid")})) in before
    wrong = "wrong-token-0123456789abcdef"
    assert client.get("/v1/lists").status_code == 401
    assert client.get("/v1/stats", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/v1/lists/anna@example.org",
                      headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert client.get("/v1/lists", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                      ).status_code == 200
    after = scrape(client)
    assert increase(before, after, "optin_operator_refused_total", reason="missing") == 2
    assert increase(before, after, "optin_operator_refused_total", reason="invalid") == 1
    with app.app_context():
        assert [a.status for a in db.session.scalars(select(AuditEntry))] == [200]
    exposed = client.get("/metrics").get_data(as_text=True)
    assert wrong not in exposed and "127.0.0.1" not in exposed
    assert "refused GET /v1/lists/<slug> (invalid)" in caplog.text
    assert wrong not in caplog.text and "anna@example.org" not in caplog.text


def _scrape_at(client, moment: datetime) -> dict[tuple[str, frozenset], float]:
    """``scrape`` with the clock stopped at ``moment``."""
    with time_machine.travel(moment, tick=False):
        return scrape(client)


def test_failed_smtp_delivery_and_outbox_gauges(app, client, newsletter, smtp_server, mailbox):
    assert signup(client, "metrics-bert@example.org").status_code == 202
    with app.app_context():
        queued_at = db.session.scalar(select(OutboxItem.created_at))
    queued = _scrape_at(client, queued_at + timedelta(seconds=42.5))
    assert value(queued, "optin_database_up") == 1
    assert value(queued, "optin_outbox_pending", kind="confirm_mail") == 1
    assert value(queued, "optin_outbox_oldest_pending_age_seconds", kind="confirm_mail") == 42.5

    smtp_server.stop()
    try:
        deliver(app)  # the SMTP server is down: one failed attempt, retried later
        failed = scrape(client)
    finally:
        smtp_server.start()
    assert increase(queued, failed, "optin_mail_delivery_failures_total", template="confirm") == 1
    assert increase(queued, failed, "optin_mail_deliveries_total", template="confirm") == 0
    assert value(failed, "optin_outbox_pending", kind="confirm_mail") == 1  # still queued
    # Its age counts from when it was queued, not from the failed attempt.
    later = _scrape_at(client, queued_at + timedelta(minutes=10))
    assert value(later, "optin_outbox_oldest_pending_age_seconds", kind="confirm_mail") == 600
    assert "metrics-bert" not in client.get("/metrics").get_data(as_text=True)


def test_database_down_is_a_metric_not_an_error(tmp_path):
    closed = f"postgresql+psycopg://optin@127.0.0.1:{free_port()}/optin?connect_timeout=2"
    app = create_app(make_config(tmp_path, OPTIN_DATABASE_URL=closed))
    samples = scrape(app.test_client())
    assert value(samples, "optin_database_up") == 0
    assert not any(name.startswith("optin_outbox_") and name != "optin_outbox_dead_letters_total"
                   for name, _ in samples)


def test_activecampaign_calls_by_status_and_dead_letters(ac_app, client, ac_newsletter, fake_ac,
                                                         confirmed):
    before = scrape(client)
    fake_ac.fail_next(1, 429, retry_after="1")
    confirmed("metrics-carl@example.org")  # its ac_subscribe meets the 429
    after_429 = scrape(client)
    assert increase(before, after_429, "optin_activecampaign_requests_total",
                    endpoint="POST contact/sync", status="429") == 1
    assert increase(before, after_429, "optin_activecampaign_requests_total",
                    endpoint="POST contact/sync", status="201") == 0
    assert value(after_429, "optin_outbox_pending", kind="ac_subscribe") == 1

    with ac_app.app_context():  # the list id ActiveCampaign does not have: a dead letter
        db.session.get(MailingList, ac_newsletter["id"]).ac_list_id = 99
        db.session.query(OutboxItem).filter_by(kind="ac_subscribe").update(
            {"next_attempt_at": OutboxItem.created_at})
        db.session.commit()
    deliver(ac_app)
    after = scrape(client)
    assert increase(after_429, after, "optin_activecampaign_requests_total",
                    endpoint="POST contact/sync", status="201") == 1
    assert increase(before, after, "optin_outbox_dead_letters_total", kind="ac_subscribe") == 1
    assert value(after, "optin_outbox_dead", kind="ac_subscribe") == 1
    assert value(after, "optin_outbox_pending", kind="ac_subscribe") == 0
    text = client.get("/metrics").get_data(as_text=True)
    assert "metrics-carl" not in text and fake_ac.api_key not in text


@pytest.fixture
def unreachable_ac_config(app_config):
    """ActiveCampaign live, at a port where nothing listens."""
    app_config.update(OPTIN_AC_URL=f"http://127.0.0.1:{free_port()}", OPTIN_AC_API_KEY="k" * 20,
                      OPTIN_AC_TIMEOUT_SECONDS="1")
    return app_config


def test_activecampaign_without_an_answer_counts_as_status_0(app, client, newsletter, confirmed,
                                                             unreachable_ac_config):
    with app.app_context():
        db.session.get(MailingList, newsletter["id"]).ac_list_id = 1
        db.session.commit()
    before = scrape(client)
    confirmed("metrics-dora@example.org")
    after = scrape(client)
    assert increase(before, after, "optin_activecampaign_requests_total",
                    endpoint="POST contact/sync", status="0") == 1


# --- several processes -----------------------------------------------------------------------


SIGNUPS = 12


@pytest.fixture
def metrics_dir(tmp_path):
    path = tmp_path / "metrics"
    path.mkdir()
    return path


def test_counters_add_up_across_gunicorn_workers_and_the_worker_process(
        app, app_config, newsletter, mailbox, metrics_dir):
    """gunicorn workers (recycled every 3 requests, so counts come from many processes, most
    of them gone) and an ``optin worker`` share OPTIN_METRICS_DIR: /metrics sums them all."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIN_", "PROMETHEUS_"))}
    env.update(app_config, OPTIN_METRICS_DIR=str(metrics_dir), PYTHONPATH=os.getcwd())
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "2",
             "GUNICORN_CMD_ARGS": "--max-requests 3 --max-requests-jitter 0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{base}/readyz", timeout=5), timeout=20)
        before = _parse(requests.get(f"{base}/metrics", timeout=10).text)

        def sign(i: int) -> int:
            return requests.post(f"{base}/v1/subscriptions", timeout=30, json={
                "email": f"multi{i}@example.org", "list": "newsletter", "consent_text_version": 1,
            }).status_code

        with ThreadPoolExecutor(2) as pool:
            assert list(pool.map(sign, range(SIGNUPS))) == [202] * SIGNUPS
        processes = {f.name for f in metrics_dir.glob("counter_*.db")}
        subprocess.run([sys.executable, "-m", "optin", "worker", "--once"], env=env, check=True,
                       timeout=120, capture_output=True)
        after = _parse(requests.get(f"{base}/metrics", timeout=10).text)
    finally:
        web.terminate()
        web.wait(timeout=30)
    assert len(processes) >= SIGNUPS // 3, processes
    assert increase(before, after, "optin_signups_total", list="newsletter", outcome="new") == SIGNUPS
    # Counted in the worker process, seen through gunicorn's /metrics.
    assert increase(before, after, "optin_mail_deliveries_total", template="confirm") == SIGNUPS
    assert value(after, "optin_outbox_pending", kind="confirm_mail") == 0


def test_worker_serves_its_own_metrics(app, app_config, client, newsletter, mailbox):
    """``optin worker --metrics-port``: its counters, scraped from the worker process itself."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIN_", "PROMETHEUS_"))}
    env.update(app_config, OPTIN_WORKER_POLL_SECONDS="0.1", PYTHONPATH=os.getcwd())
    worker = subprocess.Popen([sys.executable, "-m", "optin", "worker", "--metrics-port", str(port),
                               "--metrics-host", "127.0.0.1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def worker_metrics() -> dict[tuple[str, frozenset], float]:
        return _parse(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)

    def once_sent() -> dict[tuple[str, frozenset], float] | None:
        # The mail reaches the mailbox a moment before the worker commits the row as sent,
        # and the counter moves a moment after that commit (it counts on commit): a scrape
        # in between saw no pending row and no delivery yet (a loaded machine hit it).
        samples = worker_metrics()
        sent = mailbox.to("metrics-erik@example.org") and not value(
            samples, "optin_outbox_pending", kind="confirm_mail") and increase(
            before, samples, "optin_mail_deliveries_total", template="confirm")
        return samples if sent else None

    try:
        before = wait_for(worker_metrics, timeout=60)  # start-up is seconds of CPU on a loaded machine
        assert signup(client, "metrics-erik@example.org").status_code == 202
        after = wait_for(once_sent, timeout=60)
    finally:
        worker.terminate()
        _, errors = worker.communicate(timeout=30)
    assert worker.returncode == 0, errors
    assert increase(before, after, "optin_mail_deliveries_total", template="confirm") == 1
    assert value(after, "optin_database_up") == 1
    assert value(after, "optin_outbox_pending", kind="confirm_mail") == 0
    assert "metrics-erik" not in errors  # its JSON log lines carry no address either


def test_a_metrics_dir_after_counting_in_memory_is_refused(app, tmp_path):
    # The mode belongs to the process and ``app`` chose memory: a second app counting in
    # files would be silently wrong, so it refuses to start.
    with pytest.raises(ConfigError, match="OPTIN_METRICS_DIR must be the same"):
        create_app(make_config(tmp_path, OPTIN_METRICS_DIR=str(tmp_path / "m")))


def test_counts_wait_for_the_outermost_commit(app, client):
    """A savepoint released inside the transaction counts nothing; a rollback forgets."""
    def count() -> float:
        return value(scrape(client), "optin_unsubscribes_total", origin="test", kind="unsubscribed")

    start = count()
    with app.app_context():
        metrics.unsubscribed("test")
        with db.session.begin_nested():
            pass
        assert count() == start
        db.session.rollback()
        db.session.commit()
        assert count() == start
        metrics.unsubscribed("test")
        with db.session.begin_nested():
            pass
        db.session.commit()
    assert count() == start + 1


def test_each_app_counts_for_itself(app, app_config, client, newsletter):
    """Two apps in one process (tests, or two hosts' apps) never add to each other's counts."""
    other_app = create_app(dict(app_config))
    other = other_app.test_client()
    try:
        before, other_before = scrape(client), scrape(other)
        assert signup(client, "metrics-fritz@example.org").status_code == 202
        assert increase(before, scrape(client), "optin_signups_total",
                        list="newsletter", outcome="new") == 1
        assert increase(other_before, scrape(other), "optin_signups_total",
                        list="newsletter", outcome="new") == 0
    finally:
        with other_app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_outbox_lag_counts_from_when_a_row_became_due(app, client, newsletter):
    assert signup(client, "metrics-lag@example.org").status_code == 202
    with app.app_context():
        due_at = db.session.scalar(select(OutboxItem.next_attempt_at))
    samples = _scrape_at(client, due_at + timedelta(seconds=7))
    assert value(samples, "optin_outbox_lag_seconds", kind="confirm_mail") == 7
    deliver(app)
    assert ("optin_outbox_lag_seconds", frozenset({("kind", "confirm_mail")})) not in scrape(client)
