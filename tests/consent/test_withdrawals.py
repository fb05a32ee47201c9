"""Queued withdrawals (``consent.withdrawals``): a withdrawal that found its subscription held
by a delivery waits in the outbox, is shown as done, stops the mails behind it, and is
applied once, with its request's evidence, by whoever next holds the row."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy import select

from optin.consent import ledger, withdrawals
from optin.consent.subscriptions import Client
from optin.consent.withdrawals import Withdrawal
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import (
    ConsentEvent,
    MailingList,
    OutboxItem,
    Subscription,
    Suppression,
    utcnow,
)

from ..conftest import ADMIN_TOKEN, PG_URL, deliver, links

WITHDRAWN = "Sie sind abgemeldet"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ADDRESS = "anna@example.org"
QUEUED_IP, LATER_IP = "198.51.100.9", "203.0.113.50"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def quick_config(app_config: dict[str, str]) -> dict[str, str]:
    """Lock waits of half a second: the PostgreSQL tests hold a row and wait them out."""
    app_config["OPTIN_WITHDRAWAL_LOCK_WAIT_SECONDS"] = "0.5"
    return app_config


def _sub(app, address: str = ADDRESS) -> Subscription:
    with app.app_context():
        sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
        db.session.expunge(sub)
        return sub


def _queue(app, sub_id: int, *, seconds_ago: float = 30, ip: str = QUEUED_IP) -> Withdrawal:
    request = Withdrawal(origin="one_click", client=Client(ip=ip, user_agent="MailClient/9"),
                         at=utcnow() - timedelta(seconds=seconds_ago))
    with app.app_context():
        withdrawals.queue(sub_id, request)
        db.session.commit()
    return request


def _rows(app) -> list[OutboxItem]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxItem).where(
            OutboxItem.kind == withdrawals.KIND).order_by(OutboxItem.id)))
        db.session.expunge_all()
        return rows


def _events(app, sub_id: int) -> list[ConsentEvent]:
    with app.app_context():
        events = list(db.session.scalars(select(ConsentEvent).where(
            ConsentEvent.subscription_id == sub_id).order_by(ConsentEvent.seq)))
        db.session.expunge_all()
        return events


def _kinds(app, sub_id: int) -> list[str]:
    return [e.kind for e in _events(app, sub_id)]


def test_a_queued_withdrawal_is_shown_done_and_applied_once_with_its_evidence(
        app, client, confirmed, mailbox):
    path = confirmed()
    sub = _sub(app)
    request = _queue(app, sub.id)
    _queue(app, sub.id, seconds_ago=10)  # a repeat while it waits adds nothing
    assert [r.status for r in _rows(app)] == ["pending"]
    with app.app_context():
        assert withdrawals.pending([sub.id, sub.id + 100]) == {sub.id}
    page = client.get(path).get_data(as_text=True)
    assert WITHDRAWN in page and 'method="post"' not in page
    assert _sub(app).status == "confirmed"  # not applied yet: only queued

    deliver(app)
    deliver(app)
    [withdrawal] = [e for e in _events(app, sub.id) if e.kind == "unsubscribed"]
    assert (withdrawal.at, withdrawal.ip, withdrawal.user_agent, withdrawal.origin) == (
        request.at, QUEUED_IP, "MailClient/9", "one_click")
    after = _sub(app)
    assert (after.status, after.withdrawn_at, after.first_name) == (
        "unsubscribed", request.at, None)
    with app.app_context():
        assert db.session.scalar(select(Suppression.id).where(
            Suppression.email_hash == after.email_hash)) is not None
        assert db.session.scalar(select(OutboxItem.id).where(
            OutboxItem.kind == "ac_unsubscribe", OutboxItem.subscription_id == sub.id))
        assert withdrawals.pending([sub.id]) == set()
        assert ledger.verify(db.session).ok
    [row] = _rows(app)
    assert (row.status, row.payload) == ("done", withdrawals.PROCESSED)


def test_a_repeated_unsubscribe_applies_the_queued_one_first(app, client, confirmed):
    path = confirmed()
    sub = _sub(app)
    request = _queue(app, sub.id)
    answer = client.post(path, data=ONE_CLICK, environ_base={"REMOTE_ADDR": LATER_IP})
    assert answer.status_code == 200 and WITHDRAWN in answer.get_data(as_text=True)
    [withdrawal] = [e for e in _events(app, sub.id) if e.kind == "unsubscribed"]
    assert (withdrawal.at, withdrawal.ip) == (request.at, QUEUED_IP)  # the first request's
    assert [(r.status, r.payload) for r in _rows(app)] == [("done", withdrawals.PROCESSED)]
    deliver(app)
    assert _kinds(app, sub.id).count("unsubscribed") == 1


def test_an_erasure_applies_a_queued_withdrawal_before_it_and_keeps_nothing_of_it(
        app, client, runner, mailbox):
    """A list that sends the goodbye: the erasure right behind the queued withdrawal sends
    none, records both in their order, and leaves no IP in the queue."""
    assert runner.invoke(args=["lists", "create", "club", "--name", "Club",
                               "--goodbye"]).exit_code == 0
    assert runner.invoke(args=["consent-texts", "add", "club", "--locale", "de",
                               "--text", "Ja, Club-Post."]).exit_code == 0
    assert client.post("/v1/subscriptions", json={
        "email": ADDRESS, "list": "club", "consent_text_version": 1,
        "first_name": "Anna"}).status_code == 202
    deliver(app)
    assert client.post(links(mailbox.to(ADDRESS)[-1])["confirm"]).status_code == 303
    deliver(app)
    sub = _sub(app)
    _queue(app, sub.id)
    mailbox.clear()
    assert client.delete(f"/v1/contacts?email={ADDRESS}", headers=AUTH).status_code == 200
    deliver(app)
    assert mailbox.to(ADDRESS) == []  # no goodbye to someone who asked for erasure
    kinds = _kinds(app, sub.id)
    assert kinds.index("unsubscribed") < kinds.index("erased")
    assert _events(app, sub.id)[kinds.index("unsubscribed")].ip == QUEUED_IP
    with app.app_context():
        payloads = json.dumps([r.payload for r in db.session.scalars(select(OutboxItem))])
        assert QUEUED_IP not in payloads and "MailClient" not in payloads
        after = db.session.get(Subscription, sub.id)
        assert (after.status, after.first_name, after.erased_at is not None) == (
            "unsubscribed", None, True)
        assert ledger.verify(db.session).ok


def test_a_group_sends_nothing_to_a_subscription_with_a_queued_withdrawal(
        app, client, signed_up, mailbox):
    path = signed_up()
    assert client.post(path).status_code == 303  # queues the welcome mail
    sub = _sub(app)
    _queue(app, sub.id)
    mailbox.clear()
    deliver(app)
    assert mailbox.to(ADDRESS) == []
    assert "welcome_sent" not in _kinds(app, sub.id)
    with app.app_context():
        welcome = db.session.scalar(select(OutboxItem).where(OutboxItem.kind == "welcome_mail"))
        assert welcome.status == "done"
    assert _sub(app).status == "unsubscribed"


@pytest.fixture
def held(app):
    """Hold a subscription's row lock from another connection, as a delivery group does;
    call what it returns to let go."""
    holders: list[tuple[sa.Connection, sa.Transaction]] = []

    def release() -> None:
        while holders:
            conn, tx = holders.pop()
            tx.rollback()
            conn.close()

    def _hold(sub_id: int):  # noqa: ANN202
        with app.app_context():
            conn = db.engine.connect()
        tx = conn.begin()
        conn.execute(sa.text("SELECT id FROM subscription WHERE id = :id FOR UPDATE"),
                     {"id": sub_id})
        holders.append((conn, tx))
        return release

    yield _hold
    release()


@pytest.mark.skipif(not PG_URL, reason="row locks are PostgreSQL's")
def test_a_held_row_queues_the_link_and_the_webhook_and_the_worker_applies_them(
        app, client, confirmed, quick_config, held):
    path = confirmed()
    sub = _sub(app)
    with app.app_context():
        db.session.get(MailingList, sub.list_id).ac_list_id = 1
        db.session.commit()
    release = held(sub.id)
    answer = client.post(path, data=ONE_CLICK, environ_base={"REMOTE_ADDR": LATER_IP})
    assert answer.status_code == 200 and WITHDRAWN in answer.get_data(as_text=True)
    assert WITHDRAWN in client.get(path).get_data(as_text=True)
    hook = "/webhooks/activecampaign?secret=webhook-secret-0123456789"
    for kind in ("unsubscribe", "bounce"):
        assert client.post(hook, data={"type": kind, "list": "1", "contact[email]": ADDRESS,
                                       "date_time": "2026-05-02T08:41:07-05:00"}).status_code == 200
    # The link's withdrawal and the bounce wait; the webhook's unsubscribe found one waiting.
    assert [(r.status, r.payload["kind"]) for r in _rows(app)] == [
        ("pending", "unsubscribed"), ("pending", "bounced")]
    assert _sub(app).status == "confirmed"
    release()
    deliver(app)
    events = _events(app, sub.id)
    [withdrawal] = [e for e in events if e.kind == "unsubscribed"]
    assert (withdrawal.ip, withdrawal.origin) == (LATER_IP, "one_click")
    assert [e.kind for e in events].count("bounced") == 1
    assert _sub(app).status == "unsubscribed"
    assert [(r.status, r.payload) for r in _rows(app)] == [("done", withdrawals.PROCESSED)] * 2
    with app.app_context():
        assert ledger.verify(db.session).ok


@pytest.mark.skipif(not PG_URL, reason="row locks are PostgreSQL's")
def test_an_erasure_of_a_held_row_is_queued_behind_its_withdrawal(
        app, client, runner, mailbox, quick_config, held):
    """One-click, then erasure, both while a delivery holds the row, on a list that sends
    the goodbye: both answer, the worker applies them in order, and no goodbye leaves."""
    assert runner.invoke(args=["lists", "create", "club", "--name", "Club",
                               "--goodbye"]).exit_code == 0
    assert runner.invoke(args=["consent-texts", "add", "club", "--locale", "de",
                               "--text", "Ja, Club-Post."]).exit_code == 0
    assert client.post("/v1/subscriptions", json={
        "email": ADDRESS, "list": "club", "consent_text_version": 1,
        "first_name": "Anna"}).status_code == 202
    deliver(app)
    assert client.post(links(mailbox.to(ADDRESS)[-1])["confirm"]).status_code == 303
    deliver(app)
    path = links(mailbox.to(ADDRESS)[-1])["unsubscribe"]
    sub = _sub(app)
    release = held(sub.id)
    assert client.post(path, data=ONE_CLICK, environ_base={
        "REMOTE_ADDR": LATER_IP}).status_code == 200
    erasure = client.delete(f"/v1/contacts?email={ADDRESS}", headers=AUTH)
    assert erasure.status_code == 200
    [answer] = erasure.get_json()["subscriptions"]
    assert (answer["status_before"], answer["status"]) == ("unsubscribed", "unsubscribed")
    assert [r.payload.get("erase", False) for r in _rows(app)] == [False, True]
    release()
    mailbox.clear()
    deliver(app)
    assert mailbox.to(ADDRESS) == []
    kinds = _kinds(app, sub.id)
    assert kinds.index("unsubscribed") < kinds.index("erased")
    after = _sub(app)
    assert (after.status, after.first_name, after.erased_at is not None) == (
        "unsubscribed", None, True)
    assert [(r.status, r.payload) for r in _rows(app)] == [("done", withdrawals.PROCESSED)] * 2
    with app.app_context():
        assert ledger.verify(db.session).ok


def test_a_click_after_a_queued_withdrawal_applies_the_withdrawal_first(
        app, client, signed_up, mailbox):
    """A withdrawal asked for before a confirmation click, still queued (its row held
    elsewhere), comes first when the click is applied: the ledger reads withdrawn and the
    click is refused, never confirmed → unsubscribed in the wrong order."""
    path = signed_up(ADDRESS)
    sub = _sub(app)
    _queue(app, sub.id, seconds_ago=30)
    with app.app_context():  # another worker has the queued row: only the click runs here
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.kind == withdrawals.KIND)
                           .values(claimed_by="elsewhere",
                                   claimed_until=utcnow() + timedelta(minutes=5)))
        db.session.commit()
    assert client.post(path).status_code == 303
    deliver(app)
    kinds = _kinds(app, sub.id)
    assert "unsubscribed" in kinds and "confirmed" not in kinds, kinds
    assert _sub(app).status == "unsubscribed"
    assert [e.ip for e in _events(app, sub.id) if e.kind == "unsubscribed"] == [QUEUED_IP]


def _signup_again(app, address: str = ADDRESS) -> None:
    """A signup through the form, left queued for the worker (a plain client)."""
    raw = FlaskClient(app, app.response_class)
    assert raw.post("/v1/subscriptions", json={
        "email": address, "list": "newsletter", "consent_text_version": 1},
        environ_base={"REMOTE_ADDR": LATER_IP}).status_code == 202


def _signed_up_again(app, mailbox, old_id: int) -> None:
    """The signup after the withdrawal started a new subscription and mailed its link; the
    old one stays withdrawn with one withdrawal and no repeat signup on it."""
    kinds = _kinds(app, old_id)
    assert kinds.count("unsubscribed") == 1 and "signup_repeated" not in kinds, kinds
    with app.app_context():
        subs = {s.id: s.status for s in db.session.scalars(select(Subscription))}
        assert ledger.verify(db.session).ok
    new = [i for i in subs if i != old_id]
    assert subs[old_id] == "unsubscribed" and [subs[i] for i in new] == ["pending"], subs
    assert _kinds(app, new[0])[:2] == ["signup_requested", "confirmation_sent"]
    [mail] = mailbox.to(ADDRESS)
    assert "/confirm/" in mail.get_body(preferencelist=("plain",)).get_content()


def test_a_signup_after_a_queued_withdrawal_starts_a_new_subscription(
        app, client, confirmed, mailbox):
    """Unsubscribe (queued: a delivery held the row), then sign up again: the worker, taking
    the signup first (intake groups run before the rest of a batch), applies the withdrawal
    asked for before it, so the signup starts a new subscription and gets its mail, rather
    than being kept as a repeat of the subscription the withdrawal then ends (lost)."""
    confirmed()
    sub = _sub(app)
    _queue(app, sub.id, seconds_ago=30)
    _signup_again(app)
    mailbox.clear()
    with app.app_context():
        Worker(app, threads=1).drain()
    _signed_up_again(app, mailbox, sub.id)


@pytest.mark.skipif(not PG_URL, reason="row locks are PostgreSQL's")
def test_a_signup_after_a_one_click_on_a_held_row_starts_a_new_subscription(
        app, client, confirmed, mailbox, quick_config, held):
    path = confirmed()
    sub = _sub(app)
    release = held(sub.id)
    assert client.post(path, data=ONE_CLICK).status_code == 200
    assert [r.status for r in _rows(app)] == ["pending"]  # queued behind the held row
    release()
    _signup_again(app)
    mailbox.clear()
    with app.app_context():
        Worker(app, threads=1).drain()
    _signed_up_again(app, mailbox, sub.id)


@pytest.fixture
def once_config(app_config: dict[str, str]) -> dict[str, str]:
    """One attempt before another row would be a dead letter."""
    app_config["OPTIN_OUTBOX_MAX_ATTEMPTS"] = "1"
    return app_config


def test_a_queued_withdrawal_that_keeps_failing_is_never_given_up(
        app, client, runner, signed_up, mailbox, once_config, monkeypatch):
    """Applying a queued withdrawal fails past the attempts a dead letter gets: the row stays
    pending (a dead letter would be a withdrawal lost), is counted for an alert and shown as
    failing, the welcome mail behind it still does not go out, and once the cause is gone
    the next attempt withdraws with the request's evidence."""
    path = signed_up(ADDRESS)
    assert client.post(path).status_code == 303  # the click queues the welcome mail
    sub = _sub(app)
    request = _queue(app, sub.id, seconds_ago=5)
    failures = []

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        failures.append(1)
        raise RuntimeError("the ledger's disk is full")

    real = withdrawals.subscriptions.withdraw
    monkeypatch.setattr(withdrawals.subscriptions, "withdraw", broken)
    mailbox.clear()
    deliver(app)
    assert failures and mailbox.to(ADDRESS) == []
    [row] = _rows(app)
    assert (row.status, row.attempts) == ("pending", 1), row.last_error
    assert row.payload["ip"] == QUEUED_IP and "disk is full" in row.last_error
    assert 'optin_outbox_overdue_total{kind="withdrawal_intake"} 1.0' in client.get(
        "/metrics").get_data(as_text=True)
    listed = runner.invoke(args=["outbox", "list", "--pending"])
    assert "withdrawal_intake" in listed.output and "never given up" in listed.output
    with app.app_context():
        assert withdrawals.pending([sub.id]) == {sub.id}  # groups still mail nothing
        assert ledger.verify(db.session).ok

    monkeypatch.setattr(withdrawals.subscriptions, "withdraw", real)
    with app.app_context():  # its backoff has passed
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.id == row.id)
                           .values(next_attempt_at=utcnow()))
        db.session.commit()
    deliver(app)
    assert mailbox.to(ADDRESS) == []
    [withdrawal] = [e for e in _events(app, sub.id) if e.kind == "unsubscribed"]
    assert (withdrawal.at, withdrawal.ip) == (request.at, QUEUED_IP)
    assert _sub(app).status == "unsubscribed"
    assert [(r.status, r.payload) for r in _rows(app)] == [("done", withdrawals.PROCESSED)]


def test_a_waiting_withdrawals_evidence_is_shown_on_access_and_kept_no_longer_than_a_signups(
        app, client, runner, confirmed):
    """Art. 15 shows a queued withdrawal's IP and user agent; past the retention of queued
    requests (OPTIN_PENDING_RETENTION_DAYS) retention strips them, like a queued signup's,
    but keeps the withdrawal itself (its time and channel): it is still applied."""
    confirmed()
    sub = _sub(app)
    request = _queue(app, sub.id)
    export = client.get(f"/v1/contacts?email={ADDRESS}", headers=AUTH).get_json()
    assert export["queued_withdrawals"] == [{
        "subscription_id": sub.id, "kind": "unsubscribed", "origin": "one_click",
        "received_at": request.at.isoformat(), "ip": QUEUED_IP, "user_agent": "MailClient/9"}]
    with app.app_context():  # the worker never took it (stopped, or failing) for 15 days
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.kind == withdrawals.KIND)
                           .values(created_at=utcnow() - timedelta(days=15)))
        db.session.commit()
    result = runner.invoke(args=["retention", "run"])
    assert result.exit_code == 0, result.output
    [row] = _rows(app)
    assert row.status == "pending"
    assert QUEUED_IP not in json.dumps(row.payload) and "MailClient" not in json.dumps(row.payload)
    assert (row.payload["at"], row.payload["origin"]) == (request.at.isoformat(), "one_click")
    export = client.get(f"/v1/contacts?email={ADDRESS}", headers=AUTH).get_json()
    assert [(w["ip"], w["user_agent"]) for w in export["queued_withdrawals"]] == [(None, None)]
    deliver(app)
    [withdrawal] = [e for e in _events(app, sub.id) if e.kind == "unsubscribed"]
    assert (withdrawal.at, withdrawal.ip, withdrawal.origin) == (request.at, None, "one_click")
    assert _sub(app).status == "unsubscribed"


@pytest.mark.skipif(not PG_URL, reason="row locks are PostgreSQL's")
def test_an_erasure_behind_a_signup_in_a_stalled_group_answers_at_once_and_changes_nothing(
        app, client, confirmed, quick_config):
    """A repeat signup of the address is in an intake group that waits for a subscription a
    stalled relay's mail group holds (here: its row locked from another connection). The
    erasure's first try gives up after the lock wait; its queued path then dropped the
    queued signups with no lock wait at all, and so waited for that group as long as the
    relay stalled (25 s and more: the web tier's timeout, a 5xx). Now it answers within the
    wait: 409 with Retry-After, nothing changed; asked again once the group is through, it
    erases (and the signup it was waiting for is erased with it)."""
    confirmed(first_name="Anna")
    queued_only = FlaskClient(app, app.response_class)  # the worker takes it: see below
    assert queued_only.post("/v1/subscriptions", json={
        "email": ADDRESS, "list": "newsletter", "consent_text_version": 1,
        "first_name": "Anna"}).status_code == 202
    with app.app_context():
        conn = db.engine.connect()
    tx = conn.begin()
    assert conn.execute(sa.text("SELECT id FROM outbox WHERE kind = 'signup_intake' AND "
                                "status = 'pending' FOR UPDATE")).all()
    releaser = threading.Timer(8.0, lambda: (tx.rollback(), conn.close()))
    releaser.start()
    try:
        started = time.monotonic()
        answer = client.delete(f"/v1/contacts?email={ADDRESS}", headers=AUTH)
        took = time.monotonic() - started
    finally:
        releaser.join()
    assert took < 5.0, took
    assert answer.status_code == 409, answer.get_data(as_text=True)
    assert answer.headers["Retry-After"] == "5"
    assert "Nothing was changed" in answer.get_json()["detail"]
    sub = _sub(app)
    assert (sub.status, sub.erased_at, sub.first_name) == ("confirmed", None, "Anna")
    assert "erased" not in _kinds(app, sub.id)
    again = client.delete(f"/v1/contacts?email={ADDRESS}", headers=AUTH)
    assert again.status_code == 200
    assert _sub(app).status == "unsubscribed" and "erased" in _kinds(app, sub.id)
    with app.app_context():
        assert db.session.scalar(select(OutboxItem.id).where(
            OutboxItem.kind == "signup_intake", OutboxItem.status == "pending")) is None
