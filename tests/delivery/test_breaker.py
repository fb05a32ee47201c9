"""Circuit breakers per destination: an outage pauses the rows without spending their
attempts, one probe per interval is shared by all workers, and the first probe that goes
through lets the backlog out at once (issue 14)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from optin.delivery.breaker import PREFIX, Breakers, BreakerState
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import JobState, OutboxItem

from ..conftest import refused_recipients, signup
from ..ops.test_metrics import scrape, value

PROBE = 4.0  # long enough that a loaded machine gets through a round within it


@pytest.fixture
def breaker_config(app_config):
    app_config.update(OPTIN_BREAKER_FAILURES="3", OPTIN_BREAKER_PROBE_SECONDS=str(PROBE))
    return app_config


def _rows(app, kind: str = "confirm_mail") -> list[OutboxItem]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxItem).where(OutboxItem.kind == kind)
                                       .order_by(OutboxItem.id)))
        db.session.expunge_all()
        return rows


def state(app, destination: str) -> BreakerState:
    with app.app_context():
        row = db.session.get(JobState, PREFIX + destination)
        return BreakerState.load(destination, row.value if row else {})


def _make_due(app) -> None:
    """The pause after a destination failure (a second) is over."""
    from datetime import timedelta

    from optin.models import utcnow

    with app.app_context():
        for row in db.session.scalars(select(OutboxItem).where(OutboxItem.status == "pending")):
            row.next_attempt_at = utcnow() - timedelta(seconds=1)
        db.session.commit()


def test_a_relay_outage_opens_the_breaker_probes_once_per_interval_and_drains_on_recovery(
        app, breaker_config, client, newsletter, mailbox, smtp_server):
    addresses = [f"wait{i}@example.org" for i in range(8)]
    smtp_server.stop()
    try:
        for address in addresses:
            assert signup(client, address).status_code == 202
        worker = Worker(app, threads=1)
        with app.app_context():
            worker.run_once()  # three refused connections open it; the rest wait untouched
        rows = _rows(app)
        assert {r.status for r in rows} == {"pending"}
        assert {r.attempts for r in rows} == {0}  # no row spent an attempt
        assert sum(1 for r in rows if r.last_error and "mail not sent" in r.last_error) == 3
        opened = state(app, "smtp")
        assert opened.is_open and opened.failures == 3 and opened.probes == 0
        # Operators see it: the breaker on /metrics, and why each row waits.
        samples = scrape(client)
        assert value(samples, "optin_breaker_open", destination="smtp") == 1
        assert value(samples, "optin_breaker_failures", destination="smtp") == 3
        listing = app.test_cli_runner().invoke(args=["outbox", "list", "--pending"])
        assert listing.output.count("waiting: breaker open (smtp)") == len(addresses)
        assert "breaker smtp open since" in listing.output
        assert "wait0@example.org" not in listing.output

        # Within the interval nothing is tried, however often the workers look.
        _make_due(app)
        others = [Worker(app, threads=1) for _ in range(3)]
        with app.app_context():
            assert all(w.run_once() == 0 for w in [worker, *others])
        time.sleep(PROBE + 0.2)
        with app.app_context():
            handled = [w.run_once() for w in [worker, *others]]
        assert handled.count(1) == 1 and sum(handled) == 1  # one probe between four workers
        assert state(app, "smtp").probes == 1 and state(app, "smtp").is_open
        assert {r.attempts for r in _rows(app)} == {0}  # the failed probe spent none either
    finally:
        smtp_server.start()

    time.sleep(PROBE + 0.2)
    _make_due(app)
    with app.app_context():
        assert worker.run_once() == 1  # the probe goes through and closes it
        assert not state(app, "smtp").is_open
        while worker.run_once():  # the backlog, at once
            pass
    worker.close()
    rows = _rows(app)
    assert {r.status for r in rows} == {"done"}
    assert {r.attempts for r in rows} == {1}  # the one that worked
    assert sorted(r for _, rcpts in mailbox.envelopes for r in rcpts) == sorted(addresses)
    assert state(app, "smtp").clean
    samples = scrape(client)
    assert value(samples, "optin_breaker_open", destination="smtp") == 0
    # Time to send counts from the enqueue: these waited out the outage.
    assert value(samples, "optin_mail_time_to_send_seconds_count", template="confirm") == 8
    assert value(samples, "optin_mail_time_to_send_seconds_bucket", template="confirm",
                 le="0.5") == 0


def test_a_refused_recipient_is_the_rows_own_failure(app, breaker_config, client, newsletter,
                                                     mailbox):
    """A 550 for one recipient is that row's retry, not the relay's failure: the breaker
    stays closed and the neighbours in the batch go out."""

    with refused_recipients(mailbox, "bounce"):
        for address in ("bounce1@example.org", "bounce2@example.org", "bounce3@example.org",
                        "fine1@example.org", "fine2@example.org"):
            signup(client, address)
        with app.app_context():
            Worker(app, threads=1).run_once()
    rows = {r.id: r for r in _rows(app)}
    assert sorted(r.status for r in rows.values()) == ["done", "done", "pending", "pending",
                                                       "pending"]
    assert all(r.attempts == 1 for r in rows.values())  # the refused ones spent theirs
    assert state(app, "smtp").clean or not state(app, "smtp").is_open
    assert sorted(r for _, rcpts in mailbox.envelopes for r in rcpts) == [
        "fine1@example.org", "fine2@example.org"]


def test_one_worker_takes_the_probe_turn(app, breaker_config):
    with app.app_context():
        breakers = [Breakers(db.engine, {"confirm_mail": "smtp"}, threshold=1) for _ in range(3)]
        breakers[0].failed("smtp", "OSError: refused")
        assert [b.take_probe("smtp") for b in breakers] == [False, False, False]  # not yet
        from datetime import timedelta

        from optin.models import utcnow
        later = utcnow() + timedelta(seconds=6)
        assert [b.take_probe("smtp", later) for b in breakers].count(True) == 1
        for b in breakers:
            b.refresh()
        assert all(b.open_destinations() == ["smtp"] for b in breakers)
