"""Group commits (issue 14, throughput): a delivery thread's mails go in one transaction,
and still one row's failure stays its own, a crash leaves every Message-ID in the ledger
and at most one duplicate per row, and an unsubscribe wins over a group in flight.

Through real ``optin worker`` processes and the suite's aiosmtpd server, on SQLite and
PostgreSQL (``OPTIN_TEST_DATABASE_URL``)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from optin.consent import ledger, mailcopies
from optin.delivery import groups
from optin.delivery.notifications import unsubscribe_url
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import ConsentEvent, MailIntent, OutboxItem, Subscription, utcnow

from ..conftest import ADMIN_TOKEN, PG_URL, deliver, links, refused_recipients, signup, wait_for

ONE_THREAD = {"OPTIN_WORKER_THREADS": "1", "OPTIN_WORKER_LEASE_SECONDS": "2",
              "OPTIN_WORKER_HEARTBEAT_SECONDS": "0.5"}


def _mails(app) -> list[OutboxItem]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxItem).where(
            OutboxItem.kind.in_(("confirm_mail", "welcome_mail"))).order_by(OutboxItem.id)))
        db.session.expunge_all()
        return rows


def _events(app, kind: str) -> list[ConsentEvent]:
    with app.app_context():
        events = list(db.session.scalars(select(ConsentEvent).where(ConsentEvent.kind == kind)
                                         .order_by(ConsentEvent.id)))
        db.session.expunge_all()
        return events


def _finished(app, kinds: tuple[str, ...] = ("confirm_mail",)) -> bool:
    with app.app_context():
        left = db.session.scalar(select(func.count()).where(
            OutboxItem.kind.in_(kinds), OutboxItem.status == "pending"))
        db.session.rollback()
        return left == 0


def test_a_group_of_mails_costs_a_few_statements_each(
        app, client, newsletter, mailbox, monkeypatch):
    """One transaction for the group: set-based ledger events, done marks and intents,
    where one transaction per mail took 9.2 statements a mail."""
    # The count is per group, so the group must not depend on this machine's speed: a
    # loaded CI machine sent slower than 250 ms for 20 mails and cut it in three (4.3).
    monkeypatch.setattr(groups, "GROUP_SECONDS", 60.0)
    for i in range(20):
        assert signup(client, f"many{i}@example.org").status_code == 202
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        statements.append(statement)

    def savepoint(conn, name, *args) -> None:  # noqa: ANN001 - SAVEPOINT, RELEASE: round trips
        statements.append(f"SAVEPOINT {name}")

    events = [("before_cursor_execute", count), ("savepoint", savepoint),
              ("release_savepoint", savepoint), ("rollback_savepoint", savepoint)]
    with app.app_context():
        for name, listener in events:
            event.listen(db.engine, name, listener)
        try:
            handled = Worker(app, threads=1).run_once()
        finally:
            for name, listener in events:
                event.remove(db.engine, name, listener)
    assert handled == 20 and len(mailbox.messages) == 20
    assert len(_events(app, "confirmation_sent")) == 20
    # Per group: claim (4), kinds, lock rows, subscriptions and signups, intents, events,
    # heads, copies (2), done marks, intents' delete. Per mail, nothing more on PostgreSQL
    # (a handler's SAVEPOINT is only emitted if it runs SQL); on SQLite (no row locks) a
    # status read right before the mail leaves. One transaction per mail took 10.3.
    assert len(statements) / 20 <= 2.5, len(statements) / 20


def test_one_rows_permanent_failure_leaves_its_neighbours_in_the_group(
        app, app_config, client, newsletter, mailbox, worker_processes):
    """A recipient the relay refuses, with no attempt left (a dead letter at once): its row
    alone is dead, the rest of its group is delivered and committed together."""
    addresses = [f"good{i}@example.org" for i in range(3)] + ["bad@example.org"] + [
        f"good{i}@example.org" for i in range(3, 6)]
    with refused_recipients(mailbox, "bad"):
        for address in addresses:
            assert signup(client, address).status_code == 202
        worker_processes.start(OPTIN_OUTBOX_MAX_ATTEMPTS="1", **ONE_THREAD)
        wait_for(lambda: _finished(app), timeout=60)
    rows = {r.subscription_id: r for r in _mails(app)}
    with app.app_context():
        by_address = {s.email: s.id for s in db.session.scalars(select(Subscription))}
    bad = rows[by_address["bad@example.org"]]
    assert bad.status == "dead" and bad.attempts == 1 and "550" in (bad.last_error or "")
    good = [rows[by_address[a]] for a in addresses if a != "bad@example.org"]
    assert [r.status for r in good] == ["done"] * 6
    assert all(r.attempts == 1 and r.last_error is None for r in good)
    # They went in groups: rows marked done by one statement share its finishing time.
    assert len({r.finished_at for r in good}) < len(good)
    assert sorted(r for _, rcpts in mailbox.envelopes for r in rcpts) == sorted(
        a for a in addresses if a != "bad@example.org")
    assert len(_events(app, "confirmation_sent")) == 6
    with app.app_context():
        assert db.session.scalar(select(MailIntent.id)) is None
        assert ledger.verify(db.session).ok


def test_a_worker_killed_mid_group_leaves_every_message_id_in_the_ledger(
        app, client, newsletter, mailbox, worker_processes):
    """kill -9 while a group has sent some of its mails and committed none: every mail that
    left is in the ledger (from the group's intents), and no row sends more than twice."""
    addresses = [f"group{i}@example.org" for i in range(8)]
    for address in addresses:
        assert signup(client, address).status_code == 202
    mailbox.delay = 0.1  # a group's window (250 ms) sends about three
    mailbox.keep_unanswered = True
    first = worker_processes.start(**ONE_THREAD)
    wait_for(lambda: len(mailbox.messages) >= 2, timeout=60, interval=0.01)
    worker_processes.kill(first)
    left_unrecorded = len(mailbox.messages) - len(_events(app, "confirmation_sent"))
    # More than one mail out and not committed: a group was in flight, not a single row.
    assert left_unrecorded >= 2, left_unrecorded
    mailbox.delay = 0.0
    worker_processes.start(**ONE_THREAD)
    wait_for(lambda: _finished(app), timeout=60)
    time.sleep(0.5)

    received = {}
    for address in addresses:
        ids = [str(m["Message-ID"]) for m in mailbox.to(address)]
        assert 1 <= len(ids) <= 2, (address, ids)  # at most one duplicate per row
        received[address] = ids
    recorded = {e.details["message_id"] for e in _events(app, "confirmation_sent")}
    assert {i for ids in received.values() for i in ids} <= recorded
    may_have_left = [e for e in _events(app, "confirmation_sent")
                     if "may have left" in e.details.get("recorded", "")]
    assert len(may_have_left) >= left_unrecorded
    with app.app_context():
        assert db.session.scalar(select(MailIntent.id)) is None
        assert {r.status for r in _mails(app)} == {"done"}
        assert ledger.verify(db.session).ok


def test_an_unsubscribe_during_a_group_still_wins(app, client, newsletter, mailbox,
                                                  worker_processes):
    """Welcome mails going out in a group on a slow relay; one of the addresses withdraws
    while the group is out. No mail reaches it after its withdrawal answered, and a
    welcome mail it got is in the ledger before the withdrawal."""
    addresses = [f"late{i}@example.org" for i in range(4)]
    for address in addresses:
        assert signup(client, address).status_code == 202
    deliver(app)
    for address in addresses:
        [mail] = mailbox.to(address)
        assert client.post(links(mail)["confirm"]).status_code == 303  # queues the welcome
    mailbox.clear()
    target = addresses[1]  # in the first group's window, after the first mail
    with app.app_context():
        sub = db.session.scalar(select(Subscription).where(Subscription.email == target))
        path = unsubscribe_url(sub).split("newsletter.test", 1)[1]
        sub_id = sub.id
    mailbox.delay = 0.2  # the first group sends two in its window (0.25 s)
    mailbox.receiving.clear()
    worker_processes.start(**ONE_THREAD)
    assert mailbox.receiving.wait(60)  # the group is out
    answer = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    reached_before = len(mailbox.to(target))
    mailbox.delay = 0.0
    wait_for(lambda: _finished(app, ("welcome_mail",)), timeout=60)
    time.sleep(0.5)
    assert len(mailbox.to(target)) == reached_before  # nothing after the withdrawal
    with app.app_context():
        kinds = [e.kind for e in db.session.scalars(
            select(ConsentEvent).where(ConsentEvent.subscription_id == sub_id)
            .order_by(ConsentEvent.seq))]
        assert db.session.get(Subscription, sub_id).status == "unsubscribed"
    assert kinds.count("welcome_sent") == reached_before
    if reached_before:
        assert kinds.index("welcome_sent") < kinds.index("unsubscribed")
    for address in addresses:
        if address != target:
            assert len(mailbox.to(address)) == 1


def test_an_unexpected_error_of_one_send_stays_that_rows_failure(app, client, newsletter,
                                                                  mailbox):
    """A send that fails with something neither the relay's refusal nor its outage (here a
    ValueError, as a bug in building one message would raise) is its row's failure: the
    mails its group sent before it are recorded and done, not left to be sent again by
    every later delivery while the failing row never counts an attempt."""
    addresses = ["first@example.org", "second@example.org", "poison@example.org",
                 "last@example.org"]
    for address in addresses:
        assert signup(client, address).status_code == 202
    backend = app.extensions["optin.mail_backend"]
    real = backend.send

    def send(message) -> None:  # noqa: ANN001
        if "poison" in str(message["To"]):
            raise ValueError(f"cannot build this one for {message['To']}")
        real(message)

    backend.send = send
    try:
        Worker(app, threads=1).drain()
        Worker(app, threads=1).drain()  # nothing more may leave for the rows already done
    finally:
        backend.send = real
    good = [a for a in addresses if a != "poison@example.org"]
    assert all(len(mailbox.to(a)) == 1 for a in good), [len(mailbox.to(a)) for a in good]
    with app.app_context():
        by_address = {s.email: s.id for s in db.session.scalars(select(Subscription))}
    rows = {r.subscription_id: r for r in _mails(app)}
    assert [rows[by_address[a]].status for a in good] == ["done"] * 3
    poison = rows[by_address["poison@example.org"]]
    assert poison.status == "pending" and poison.attempts == 1
    assert "ValueError" in (poison.last_error or "")
    assert "poison@" not in (poison.last_error or "")  # the API shows it: no address in clear
    recorded = {e.details["message_id"] for e in _events(app, "confirmation_sent")}
    assert {str(mailbox.to(a)[0]["Message-ID"]) for a in good} <= recorded
    with app.app_context():
        assert ledger.verify(db.session).ok


@pytest.mark.skipif(bool(PG_URL), reason="SQLite's re-check; on PostgreSQL the group holds "
                    "the row lock, so an erasure in its send (one thread) would wait forever")
def test_an_erasure_while_a_group_is_out_stops_its_goodbye_mail(app, client, runner,
                                                                 confirmed, mailbox):
    """Two goodbye mails in one group; the second address is erased while the first mail
    is with the relay. The erasure leaves the status (unsubscribed) as it was, so the
    re-check before each send must look at the erasure too: no goodbye after it."""
    assert runner.invoke(args=["lists", "create", "club", "--name", "Club",
                               "--goodbye"]).exit_code == 0
    assert runner.invoke(args=["consent-texts", "add", "club", "--locale", "de",
                               "--text", "Ja, Club-Post."]).exit_code == 0
    leave = {}
    for address in ("gone1@example.org", "gone2@example.org"):
        assert client.post("/v1/subscriptions", json={
            "email": address, "list": "club", "consent_text_version": 1}).status_code == 202
        deliver(app)
        assert client.post(links(mailbox.to(address)[-1])["confirm"]).status_code == 303
        deliver(app)
        leave[address] = links(mailbox.to(address)[-1])["unsubscribe"]
    for address in leave:  # both goodbyes queued, gone1's first
        assert client.post(leave[address], data={"List-Unsubscribe": "One-Click"}).status_code == 200
    mailbox.clear()
    backend = app.extensions["optin.mail_backend"]
    real = backend.send

    def send(message) -> None:  # noqa: ANN001
        real(message)
        if "gone1" in str(message["To"]):  # the erasure commits while the group is out
            assert client.delete("/v1/contacts?email=gone2@example.org", headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200

    backend.send = send
    try:
        Worker(app, threads=1).drain()
    finally:
        backend.send = real
    assert len(mailbox.to("gone1@example.org")) == 1
    assert mailbox.to("gone2@example.org") == []


@pytest.mark.parametrize("withdrawal", [
    "one_click",
    pytest.param("erasure", marks=pytest.mark.skipif(
        bool(PG_URL), reason="SQLite's case: an erasure waits for the row the group holds on "
        "PostgreSQL (one thread: for ever); the one-click is queued there instead")),
])
def test_a_withdrawal_between_a_groups_send_and_its_commit_is_followed(
        app, client, newsletter, mailbox, caplog, withdrawal):
    """The withdrawal commits while the group's mail is with the relay: the group's record
    follows it on the chain (no unique-key error on the ledger's seq, no traceback) and the
    copy of the confirmation mail keeps no names (the withdrawal deleted them)."""
    assert signup(client, "anna@example.org", first_name="Anna",
                  last_name="Beispiel").status_code == 202
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        path = unsubscribe_url(sub).split("newsletter.test", 1)[1]
        sub_id = sub.id
    backend = app.extensions["optin.mail_backend"]
    real = backend.send
    answers = []

    def withdraw() -> None:  # a request of its own (in this thread it would share the
        # group's app context, and so its session and transaction)
        answers.append(client.delete("/v1/contacts?email=anna@example.org", headers={
            "Authorization": f"Bearer {ADMIN_TOKEN}"}) if withdrawal == "erasure"
            else client.post(path, data={"List-Unsubscribe": "One-Click"}))

    def send(message) -> None:  # noqa: ANN001
        real(message)
        if not answers:  # commits between the send and the group's commit
            request = threading.Thread(target=withdraw)
            request.start()
            request.join(30)

    backend.send = send
    try:
        with caplog.at_level("ERROR"):
            Worker(app, threads=1).drain()
            Worker(app, threads=1).drain()
    finally:
        backend.send = real
    assert [a.status_code for a in answers] == [200]
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
    assert len(mailbox.to("anna@example.org")) == 1
    with app.app_context():
        kinds = [e.kind for e in db.session.scalars(select(ConsentEvent).where(
            ConsentEvent.subscription_id == sub_id).order_by(ConsentEvent.seq))]
        assert kinds.count("confirmation_sent") == 1
        assert kinds.count("erased" if withdrawal == "erasure" else "unsubscribed") == 1
        [copy] = mailcopies.of(sub_id).values()
        assert copy.names is None
        assert "Anna" not in str(copy.shown())
        assert ledger.verify(db.session).ok


@pytest.fixture
def few_attempts_config(app_config: dict[str, str]) -> dict[str, str]:
    app_config["OPTIN_OUTBOX_MAX_ATTEMPTS"] = "3"
    return app_config


def test_a_row_that_breaks_every_group_commit_reaches_its_dead_letter(
        app, few_attempts_config, client, newsletter, mailbox):
    """A row whose writes make every COMMIT fail (here: its ledger event) counts its
    attempts like any failing row and ends a dead letter; its neighbours are delivered
    once, not held in the loop with it."""
    for address in ("first@example.org", "poison@example.org", "last@example.org"):
        assert signup(client, address).status_code == 202
    with app.app_context():
        poison = db.session.scalar(select(Subscription.id).where(
            Subscription.email == "poison@example.org"))
    writes = {"poison": False}

    def watch(conn, cursor, statement, params, context, executemany) -> None:  # noqa: ANN001
        if "INSERT INTO consent_event" in statement and any(
                bound.get("subscription_id") == poison
                for bound in getattr(context, "compiled_parameters", None) or []):
            writes["poison"] = True

    def fail_commit(session) -> None:  # noqa: ANN001
        if writes["poison"]:
            writes["poison"] = False
            raise sa.exc.OperationalError("COMMIT", {}, ConnectionError("poisoned"))

    def forget(session, *args) -> None:  # noqa: ANN001
        writes["poison"] = False

    max_attempts = 3
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", watch)
    event.listen(Session, "before_commit", fail_commit)
    event.listen(Session, "after_rollback", forget)
    try:
        for _ in range(3 * max_attempts):
            with app.app_context():  # due again at once, as if its backoff had passed
                db.session.execute(sa.update(OutboxItem).where(OutboxItem.status == "pending")
                                   .values(next_attempt_at=utcnow() - timedelta(seconds=1),
                                           claimed_by=None, claimed_until=None))
                db.session.commit()
                worker = Worker(app, threads=1)
                worker.run_once()
                worker.close()
    finally:
        event.remove(Session, "before_commit", fail_commit)
        event.remove(Session, "after_rollback", forget)
        with app.app_context():
            event.remove(db.engine, "before_cursor_execute", watch)
    rows = {r.subscription_id: r for r in _mails(app)}
    assert (rows[poison].status, rows[poison].attempts) == ("dead", max_attempts)
    for address in ("first@example.org", "last@example.org"):
        assert len(mailbox.to(address)) == 1, address
    assert sorted(r.status for sid, r in rows.items() if sid != poison) == ["done", "done"]
