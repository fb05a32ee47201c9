"""LISTEN/NOTIFY: an idle worker on PostgreSQL starts on a signup as soon as it commits,
not at its next poll (issue 14)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from optin.delivery.notifier import Notifier
from optin.extensions import db

from ..conftest import PG_URL, signup, wait_for

pytestmark = pytest.mark.skipif(not PG_URL, reason="LISTEN/NOTIFY is PostgreSQL's")


def _listening(app) -> bool:
    with app.app_context():
        return bool(db.session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN optin_outbox'")))


def test_an_idle_worker_picks_a_signup_up_at_its_commit_not_its_poll(
        app, client, newsletter, mailbox, worker_processes):
    worker_processes.start(OPTIN_WORKER_POLL_SECONDS="60")  # polling would take a minute
    wait_for(lambda: _listening(app), timeout=30)
    # A first signup, not measured: the worker's first delivery compiles its templates and
    # opens its relay connection, which a loaded machine can stretch to seconds.
    assert signup(client, "warm@example.org").status_code == 202
    wait_for(lambda: mailbox.to("warm@example.org"), timeout=50, interval=0.01)
    time.sleep(1.0)  # idle again, its lanes waiting for a wake-up
    latencies = []
    for i in range(3):
        address = f"wake{i}@example.org"
        assert signup(client, address).status_code == 202
        committed = time.monotonic()
        wait_for(lambda a=address: mailbox.to(a), timeout=20, interval=0.01)
        latencies.append(time.monotonic() - committed)
    assert max(latencies) < 5, latencies  # milliseconds here; the bound leaves room for load


def test_the_trigger_notifies_on_commit_and_not_before(app):
    with app.app_context():
        notifier = Notifier(db.engine)
        notifier.start()
        try:
            assert notifier.listening.wait(10)
            notifier.wait(0.5)  # the wake-up it gives itself once listening
            with db.engine.connect() as conn:
                conn.execute(text("INSERT INTO outbox (kind, payload, status, attempts, "
                                  "next_attempt_at, created_at) VALUES ('confirm_mail', '{}', "
                                  "'done', 0, now(), now())"))
                assert not notifier.wait(0.5)  # not committed: nobody is woken
                conn.commit()
            assert notifier.wait(5)
        finally:
            notifier.stop()
