"""Intake groups (issue 14, burst): a delivery thread's signup intake rows in one
transaction, new addresses set-based, their confirmation mails sent in the same pass; and
still one bad row stays its own failure, a crash loses no signup and sends at most one
duplicate per row, one address's signups keep their order, resend interval and mail cap.

Through real ``optin worker`` processes and the suite's aiosmtpd server where a process
matters, on SQLite and PostgreSQL (``OPTIN_TEST_DATABASE_URL``)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from optin.consent import intake, ledger, mailcap
from optin.delivery import groups
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import ConsentEvent, MailIntent, OutboxItem, Subscription

from ..conftest import wait_for

ONE_THREAD = {"OPTIN_WORKER_THREADS": "1", "OPTIN_WORKER_LEASE_SECONDS": "2",
              "OPTIN_WORKER_HEARTBEAT_SECONDS": "0.5"}
UA = {"User-Agent": "Mozilla/5.0 (intake group test)"}


def _raw(app) -> FlaskClient:
    """A client that leaves the intake to the worker (the suite's default settles it)."""
    return FlaskClient(app, app.response_class, use_cookies=True)


def _queue(app, addresses: list[str], **extra) -> None:
    raw = _raw(app)
    for address in addresses:
        assert raw.post("/v1/subscriptions", headers=UA, json={
            "email": address, "list": "newsletter", "consent_text_version": 1,
            "first_name": "Ida", **extra}).status_code == 202


def _rows(app, kind: str) -> list[OutboxItem]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxItem).where(OutboxItem.kind == kind)
                                       .order_by(OutboxItem.id)))
        db.session.expunge_all()
        return rows


def _nothing_pending(app) -> bool:
    with app.app_context():
        left = db.session.scalar(select(func.count()).where(OutboxItem.status == "pending"))
        db.session.rollback()
        return left == 0


def _events(app, address: str) -> list[ConsentEvent]:
    with app.app_context():
        events = list(db.session.scalars(
            select(ConsentEvent).join(Subscription).where(Subscription.email == address)
            .order_by(ConsentEvent.subscription_id, ConsentEvent.seq)))
        db.session.expunge_all()
        return events


def _payload(app, item_id: int, **changes) -> None:
    """Change what an intake row holds, as a hostile or broken row would."""
    with app.app_context():
        item = db.session.get(OutboxItem, item_id)
        item.payload = {**item.payload, **changes}
        db.session.commit()


def test_a_group_of_signups_costs_a_few_statements_each(app, newsletter, mailbox, monkeypatch):
    """One transaction for the group's intake rows, the mails sent in the same pass without
    a claim of their own: 12.1 statements a signup row by row (intake row, then mail)."""
    monkeypatch.setattr(groups, "GROUP_SECONDS", 60.0)  # the count is per group: keep one
    addresses = [f"burst{i}@example.org" for i in range(20)]
    _queue(app, addresses[:10])
    _queue(app, addresses[10:], fields={"company": "ACME"})  # both kinds of fields column
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        statements.append(statement)

    def savepoint(conn, name, *args) -> None:  # noqa: ANN001 - SAVEPOINT, RELEASE: round trips
        statements.append(f"SAVEPOINT {name}")

    listeners = [("before_cursor_execute", count), ("savepoint", savepoint),
                 ("release_savepoint", savepoint), ("rollback_savepoint", savepoint)]
    with app.app_context():
        for name, listener in listeners:
            event.listen(db.engine, name, listener)
        try:
            Worker(app, threads=1).run_once()
        finally:
            for name, listener in listeners:
                event.remove(db.engine, name, listener)
    assert sorted(r for _, rcpts in mailbox.envelopes for r in rcpts) == sorted(addresses)
    assert {r.status for r in _rows(app, intake.KIND)} == {"done"}
    assert {r.payload["processed"] for r in _rows(app, intake.KIND)} == {True}
    assert len(statements) / 20 <= 3.0, (len(statements) / 20, statements)
    for address in (addresses[0], addresses[-1]):
        kinds = [e.kind for e in _events(app, address)]
        assert kinds == ["signup_requested", "confirmation_sent"]
    with app.app_context():
        subs = {s.email: s for s in db.session.scalars(select(Subscription))}
        assert subs[addresses[0]].fields is None
        assert db.session.scalar(select(func.count()).where(Subscription.fields.is_(None))) == 10
        assert subs[addresses[-1]].fields == {"company": "ACME"}
        assert subs[addresses[0]].first_name == "Ida"
        assert ledger.verify(db.session).ok


def test_one_bad_row_leaves_its_neighbours_in_the_group(app, newsletter, mailbox,
                                                        worker_processes):
    """A row whose payload the state machine cannot read (a dead letter at once, with one
    attempt allowed) and a row whose list was deleted since: the rest of the group is
    signed up and mailed, in the same group."""
    addresses = [f"fine{i}@example.org" for i in range(6)]
    _queue(app, addresses[:3] + ["hostile@example.org", "nolist@example.org"] + addresses[3:])
    rows = {r.payload["resolved_email"]: r.id for r in _rows(app, intake.KIND)}
    _payload(app, rows["hostile@example.org"], at="\x00 not a time", resolved_email=["x"])
    _payload(app, rows["nolist@example.org"], list_id=987654)
    worker_processes.start(OPTIN_OUTBOX_MAX_ATTEMPTS="1", **ONE_THREAD)
    wait_for(lambda: _nothing_pending(app), timeout=60)
    time.sleep(0.3)
    by_id = {r.id: r for r in _rows(app, intake.KIND)}
    hostile = by_id[rows["hostile@example.org"]]
    assert hostile.status == "dead" and hostile.attempts == 1
    nolist = by_id[rows["nolist@example.org"]]
    assert nolist.status == "done" and nolist.payload == intake.PROCESSED
    good = [by_id[rows[a]] for a in addresses]
    assert [r.status for r in good] == ["done"] * 6
    assert all(r.attempts == 1 and r.last_error is None for r in good)
    assert len({r.finished_at for r in good}) < len(good)  # in groups: one done statement
    assert sorted(r for _, rcpts in mailbox.envelopes for r in rcpts) == sorted(addresses)
    with app.app_context():
        assert sorted(db.session.scalars(select(Subscription.email))) == sorted(addresses)
        assert ledger.verify(db.session).ok


def test_a_failing_set_based_write_falls_back_to_row_by_row(app, newsletter, mailbox,
                                                           monkeypatch, caplog):
    """Should the group's set-based writes fail (a database error), its savepoint is
    rolled back, with the mail budget they took, and every row is signed up row by row:
    one mail each, and the cap counts each address once."""
    _queue(app, ["one@example.org", "two@example.org"])
    real = ledger.insert_events
    calls = []

    def fail_once(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        calls.append(1)
        if len(calls) == 1:
            db.session.execute(sa.text("SELECT * FROM no_such_table"))
        real(*args, **kwargs)

    monkeypatch.setattr(ledger, "insert_events", fail_once)
    with app.app_context():
        Worker(app, threads=1).drain()
    assert "processing them one by one" in caplog.text
    assert len(mailbox.to("one@example.org")) == 1 and len(mailbox.to("two@example.org")) == 1
    assert [e.kind for e in _events(app, "one@example.org")] == [
        "signup_requested", "confirmation_sent"]
    counter = app.extensions[mailcap.EXTENSION]
    item = mailcap.RateLimitItemPerDay(50)
    with app.app_context():
        digests = db.session.scalars(select(Subscription.email_hash)).all()
        assert ledger.verify(db.session).ok
    for digest in digests:
        stats = counter.get_window_stats(item, "optin", mailcap.SCOPE, digest)
        assert stats.remaining == 49  # counted once, not for the rolled-back try too


def test_one_addresss_rows_in_one_group_keep_order_interval_and_cap(app_config, app, newsletter,
                                                                   mailbox, worker_processes):
    """Rows of one address claimed together (rows queued before serial keys have none):
    each runs after the one before it committed, in order, so the resend interval and the
    per-address cap see it: three signups with a cap of two mail twice, in order."""
    address = "often@example.org"
    _queue(app, [address, "other@example.org", address, address])
    with app.app_context():  # as rows from before the serial keys: one claim takes them all
        db.session.execute(sa.update(OutboxItem).values(serial_key=None))
        db.session.commit()
    worker_processes.start(OPTIN_MAILS_PER_ADDRESS_PER_DAY="2",
                           OPTIN_RESEND_INTERVAL_MINUTES="0", **ONE_THREAD)
    wait_for(lambda: _nothing_pending(app), timeout=60)
    time.sleep(0.3)
    assert len(mailbox.to(address)) == 2 and len(mailbox.to("other@example.org")) == 1
    events = _events(app, address)
    assert [e.kind for e in events if e.kind.startswith("signup")] == [
        "signup_requested", "signup_repeated", "signup_repeated"]
    actions = [e.details.get("action") for e in events if e.kind == "signup_repeated"]
    assert actions == ["mail queued", "mail capped (OPTIN_MAILS_PER_ADDRESS_PER_DAY)"]
    signups = [e.at for e in events if e.kind.startswith("signup")]
    assert signups == sorted(signups)  # the requests' order
    assert {r.status for r in _rows(app, intake.KIND)} == {"done"}


def test_resend_interval_holds_for_one_addresss_rows_in_one_group(app, newsletter, mailbox):
    address = "twice@example.org"
    _queue(app, [address, address])
    with app.app_context():
        db.session.execute(sa.update(OutboxItem).values(serial_key=None))
        db.session.commit()
        Worker(app, threads=1).drain()
    assert len(mailbox.to(address)) == 1
    actions = [e.details.get("action") for e in _events(app, address)
               if e.kind == "signup_repeated"]
    assert actions == ["mail throttled"]


@pytest.mark.parametrize("kill_when", ["claimed", "mailing"])
def test_a_worker_killed_in_an_intake_group_loses_no_signup(app, newsletter, mailbox,
                                                            worker_processes, kill_when):
    """kill -9 right after the claim (the group's transaction in flight) or while the
    group's mails are out: every signup is recorded once, every mail that left is in the
    ledger, and no address gets more than one duplicate."""
    addresses = [f"crash{i}@example.org" for i in range(8)]
    _queue(app, addresses)
    mailbox.delay = 0.1  # a mail group's window (250 ms) sends about three
    mailbox.keep_unanswered = True

    def claimed() -> bool:
        with app.app_context():
            found = db.session.scalar(select(OutboxItem.id).where(
                OutboxItem.claimed_by.is_not(None)).limit(1))
            db.session.rollback()
            return found is not None

    first = worker_processes.start(**ONE_THREAD)
    if kill_when == "claimed":
        wait_for(claimed, timeout=60, interval=0.005)
    else:
        wait_for(lambda: len(mailbox.messages) >= 2, timeout=60, interval=0.01)
    worker_processes.kill(first)
    mailbox.delay = 0.0
    worker_processes.start(**ONE_THREAD)
    wait_for(lambda: _nothing_pending(app), timeout=60)
    time.sleep(0.5)
    recorded = set()
    for address in addresses:
        events = _events(app, address)
        assert [e.kind for e in events].count("signup_requested") == 1, address
        assert "signup_repeated" not in [e.kind for e in events], address
        received = [str(m["Message-ID"]) for m in mailbox.to(address)]
        assert 1 <= len(received) <= 2, (address, received)
        recorded |= {e.details["message_id"] for e in events if e.kind == "confirmation_sent"}
        assert set(received) <= recorded
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Subscription)) == 8
        assert db.session.scalar(select(MailIntent.id)) is None
        assert ledger.verify(db.session).ok
    assert {r.status for r in _rows(app, intake.KIND)} == {"done"}
    assert {r.status for r in _rows(app, "confirm_mail")} == {"done"}

