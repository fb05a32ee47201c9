"""The outbox and the worker: retries, dead letters, leases, SIGTERM, concurrent workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from optin.delivery import outbox
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import OutboxItem, Subscription, utcnow

from ..conftest import PG_URL, deliver, refused_recipients, signup


def _rows(app, kind="confirm_mail"):
    with app.app_context():
        return db.session.scalars(select(OutboxItem).where(OutboxItem.kind == kind)
                                  .order_by(OutboxItem.id)).all()


def _make_due(app):
    with app.app_context():
        db.session.execute(update(OutboxItem).values(next_attempt_at=utcnow()))
        db.session.commit()


def test_backoff_grows_and_is_jittered():
    first = [outbox.backoff_seconds(1) for _ in range(50)]
    fifth = [outbox.backoff_seconds(5) for _ in range(50)]
    assert all(5 <= s <= 10 for s in first)
    assert all(80 <= s <= 160 for s in fifth)
    assert len(set(first)) > 1  # jitter spreads retries of many rows
    assert max(outbox.backoff_seconds(40) for _ in range(20)) <= outbox.BACKOFF_CAP_SECONDS


def test_smtp_outage_delays_but_never_drops(app, client, newsletter, smtp_server, mailbox):
    smtp_server.stop()
    assert signup(client, "m@example.org").status_code == 202  # signups still accepted
    before = utcnow()
    deliver(app)
    [row] = _rows(app)
    # The relay's failure, not the row's: it waits without spending an attempt (the
    # breaker pauses the relay's rows after a few: test_breaker.py).
    assert (row.status, row.attempts) == ("pending", 0)
    assert "mail not sent" in row.last_error
    assert row.next_attempt_at > before

    smtp_server.start()
    _make_due(app)
    deliver(app)
    assert len(mailbox.to("m@example.org")) == 1
    assert _rows(app)[0].status == "done"


def test_dead_letters_stay_visible_and_can_be_retried(app_config, mailbox):
    from ..conftest import build_app

    app_config["OPTIN_OUTBOX_MAX_ATTEMPTS"] = "2"
    app = build_app(app_config)
    from optin.consent import lists

    with app.app_context():
        mailing_list = lists.create_list("newsletter", "News")
        lists.add_consent_text(mailing_list, "de", "Ja, bitte.")
    client, runner = app.test_client(), app.test_cli_runner()
    with refused_recipients(mailbox, "n@"):  # 550 for this recipient: the row's own failure
        signup(client, "n@example.org")
        deliver(app)
        _make_due(app)
        deliver(app)
    [row] = _rows(app)
    assert row.status == "dead" and row.attempts == 2
    listing = runner.invoke(args=["outbox", "list", "--dead"])
    assert listing.exit_code == 0
    assert f"{row.id}\tconfirm_mail\tdead" in listing.output
    assert "n@example.org" not in listing.output  # no personal data in the listing

    deliver(app)
    assert mailbox.to("n@example.org") == []  # dead letters are not retried by themselves
    result = runner.invoke(args=["outbox", "retry", str(row.id)])
    assert "1 dead letters queued again" in result.output
    deliver(app)
    assert len(mailbox.to("n@example.org")) == 1
    assert _rows(app)[0].status == "done"


def test_unknown_kind_becomes_a_dead_letter(app):
    with app.app_context():
        db.session.add(OutboxItem.pending("no_such_kind"))
        db.session.commit()
    deliver(app)
    [row] = _rows(app, "no_such_kind")
    assert row.status == "dead" and "no handler" in row.last_error


def test_expired_lease_is_taken_over(app, client, newsletter, mailbox):
    """A worker that died holding rows: its lease runs out and another worker delivers."""
    signup(client, "o@example.org")
    with app.app_context():
        assert outbox.claim("dead-worker") != []
        db.session.execute(update(OutboxItem).values(claimed_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    deliver(app)
    assert len(mailbox.to("o@example.org")) == 1


def test_a_live_lease_is_respected(app, client, newsletter, mailbox):
    signup(client, "p@example.org")
    with app.app_context():
        assert outbox.claim("other-worker") != []
    assert deliver(app) == 0
    assert mailbox.to("p@example.org") == []


def _queue(app, *keys):
    """Rows of an unknown kind (nothing runs them) with these serial keys; their ids."""
    with app.app_context():
        rows = [OutboxItem.pending("test_serial", serial_key=key) for key in keys]
        db.session.add_all(rows)
        db.session.commit()
        return [row.id for row in rows]


def _set(app, row_id, **values):
    with app.app_context():
        db.session.execute(update(OutboxItem).where(OutboxItem.id == row_id).values(**values))
        db.session.commit()


def test_rows_of_one_serial_key_are_claimed_one_after_another(app):
    """One address's queued signups must not run side by side or overtake each other (with
    four delivery threads on PostgreSQL, the fourth of four signups was once taken before
    the third and throttled as if it came first)."""
    first, second, third, other, free = _queue(app, "anna", "anna", "anna", "ben", None)
    with app.app_context():
        assert outbox.claim("w1") == [first, other, free]
        assert outbox.claim("w2") == []  # the second waits while the first runs
    _set(app, first, status="done", claimed_by=None, claimed_until=None)
    with app.app_context():
        assert outbox.claim("w2") == [second]


def test_a_claim_checks_each_rows_key_with_one_index_probe(app):
    """The claim asks, for every due row, whether an earlier row of its key is pending. With
    only a plain index on the key, PostgreSQL with no statistics yet for a table that just
    grew (a burst) answered it by ANDing that index with a scan of every pending row, per due
    row: O(n²), 38 s a claim with 19,000 queued signups. The partial index (key, id) of
    pending rows answers it with one probe; the status is written into the statement so a
    cached generic plan can use it too."""
    now = utcnow()
    with app.app_context():
        db.session.execute(OutboxItem.__table__.insert(), [
            {"kind": "test_serial", "serial_key": f"key{i}", "payload": {}, "status": "pending",
             "attempts": 0, "next_attempt_at": now, "created_at": now} for i in range(20_000)])
        db.session.commit()
    statements: list[tuple[str, object]] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if "EXISTS" in statement.upper():
            statements.append((statement, parameters))

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", seen)
        try:
            assert len(outbox.claim("w1", limit=16)) == 16
        finally:
            event.remove(db.engine, "before_cursor_execute", seen)
        statement, parameters = statements[0]
        assert "status = 'pending'" in statement
        sqlite = db.engine.dialect.name == "sqlite"
        with db.engine.connect() as conn:
            plan = "\n".join(" ".join(map(str, row)) for row in conn.exec_driver_sql(
                ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement, parameters))
    probe = plan[plan.rindex("SUBQUERY" if sqlite else "SubPlan"):]
    assert "ix_outbox_pending_serial" in probe and "ix_outbox_due" not in probe, plan


def test_a_row_backing_off_holds_the_later_rows_of_its_key_and_a_dead_one_frees_them(app):
    first, second = _queue(app, "anna", "anna")
    _set(app, first, next_attempt_at=utcnow() + timedelta(minutes=5))  # failed, retried later
    with app.app_context():
        assert outbox.claim("w1") == []
    _set(app, first, status="dead")
    with app.app_context():
        assert outbox.claim("w1") == [second]


def test_pending_mail_is_cancelled_by_a_withdrawal(app, client, confirmed, mailbox):
    """The goodbye/welcome rule: handlers look at the state when they run."""
    unsubscribe = confirmed("q@example.org")
    assert client.post(unsubscribe).status_code == 303
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        late = OutboxItem.pending("welcome_mail", subscription_id=sub.id)
        db.session.add(late)
        db.session.commit()
        late_id = late.id
    before = len(mailbox.to("q@example.org"))
    deliver(app)
    assert len(mailbox.to("q@example.org")) == before
    with app.app_context():  # handled (and found nothing to send), not crashed and retried
        row = db.session.get(OutboxItem, late_id)
        assert (row.status, row.attempts, row.last_error) == ("done", 1, None)
        assert db.session.scalar(select(func.count()).select_from(OutboxItem)
                                 .where(OutboxItem.status != "done")) == 0


def _worker_env(app_config: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIN_")}
    env.update(app_config)
    env["PYTHONPATH"] = os.getcwd()
    env["OPTIN_WORKER_POLL_SECONDS"] = "0.2"
    return env


def test_sigterm_finishes_the_row_in_hand_and_loses_nothing(app, app_config, client, newsletter,
                                                            mailbox):
    for i in range(3):
        signup(client, f"r{i}@example.org")
    mailbox.delay = 1.5
    # One delivery thread: one row in hand (with more, each thread finishes its own).
    env = {**_worker_env(app_config), "OPTIN_WORKER_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "optin", "worker"],
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert mailbox.receiving.wait(60), "worker never started sending"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    rows = _rows(app)
    done = [r for r in rows if r.status == "done"]
    assert len(done) == 1 and len(mailbox.messages) == 1  # the mail in hand was finished
    waiting = [r for r in rows if r.status == "pending"]
    assert len(waiting) == 2
    assert all(r.claimed_by is None for r in waiting)  # released, not stuck under a lease
    mailbox.delay = 0
    deliver(app)
    assert len(mailbox.messages) == 3


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (FOR UPDATE SKIP LOCKED)")
def test_concurrent_workers_never_send_a_row_twice(app, client, newsletter, mailbox):
    with app.app_context():
        for i in range(120):
            signup(client, f"w{i}@example.org")
        assert db.session.scalar(select(func.count()).select_from(Subscription)) == 120
    workers = [Worker(app, batch=5, threads=1) for _ in range(4)]  # four workers, one pool
    threads = [threading.Thread(target=w.drain) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    recipients = [rcpt for _, rcpts in mailbox.envelopes for rcpt in rcpts]
    assert len(recipients) == 120
    assert len(set(recipients)) == 120
    assert {r.status for r in _rows(app)} == {"done"}


def test_backlog_per_kind_and_in_total_come_from_one_query(app):
    now = utcnow()
    rows = [("confirm_mail", "pending", now - timedelta(minutes=10), now - timedelta(seconds=1)),
            ("confirm_mail", "pending", now - timedelta(minutes=1), now + timedelta(hours=1)),
            ("welcome_mail", "dead", now - timedelta(days=1), now - timedelta(days=1)),
            ("welcome_mail", "done", now - timedelta(days=2), now - timedelta(days=2))]
    with app.app_context():
        for kind, status, created, due in rows:
            item = OutboxItem.pending(kind)
            item.status, item.created_at, item.next_attempt_at = status, created, due
            db.session.add(item)
        db.session.commit()
        assert outbox.backlog_by_kind(now) == [
            outbox.KindBacklog("confirm_mail", pending=2, due=1, dead=0,
                               oldest_pending=now - timedelta(minutes=10),
                               oldest_due=now - timedelta(seconds=1)),
            outbox.KindBacklog("welcome_mail", pending=0, due=0, dead=1, oldest_pending=None),
        ]
        assert outbox.backlog(now) == {"pending": 2, "due": 1, "dead": 1,
                                       "oldest_pending_age_seconds": 600.0}
