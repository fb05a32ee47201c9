"""The signup intake: the request commits one row; the worker runs the state machine from it.

These tests use a plain ``FlaskClient`` where they look at what the request alone did
(the suite's default client settles the intake after each signup, see conftest).
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy import select

from optin.consent import intake, subscriptions
from optin.extensions import db
from optin.models import ConsentEvent, OutboxItem, Subscription, utcnow
from optin.privacy import retention

from ..conftest import ADMIN_TOKEN, deliver, signup

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
UA = {"User-Agent": "Mozilla/5.0 (signup test)"}


def _raw(app) -> FlaskClient:
    """A client that leaves the intake to the worker."""
    return FlaskClient(app, app.response_class, use_cookies=True)


def _intake_rows(app) -> list[OutboxItem]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxItem).where(OutboxItem.kind == intake.KIND)
                                       .order_by(OutboxItem.id)))
        db.session.expunge_all()
        return rows


def _post(client: FlaskClient, address: str, ip: str = "198.51.100.9"):
    return client.post("/v1/subscriptions", json={
        "email": address, "list": "newsletter", "consent_text_version": 1,
        "first_name": "Ida", "fields": {"company": "ACME"}}, headers=UA,
        environ_base={"REMOTE_ADDR": ip})


def _normalized(statement: str) -> str:
    """A statement's text with its literals out (the ids and values differ per request)."""
    return re.sub(r"\s+", " ", re.sub(r"'[^']*'|\b\d+\b", "?", statement)).strip()


def test_signup_request_issues_the_same_statements_for_every_address_state(
        app, client, newsletter, signed_up, confirmed, mailbox):
    # minimized: an unconfirmed signup past OPTIN_PENDING_RETENTION_DAYS
    signed_up("minimized@example.org")
    with app.app_context():
        retention.run(utcnow() + timedelta(days=15))
    signed_up("pending@example.org")
    confirmed("confirmed@example.org")
    client.post(confirmed("unsubscribed@example.org"))
    with app.app_context():
        states = dict(db.session.execute(select(Subscription.email, Subscription.status)).all())
    assert states == {None: "minimized", "pending@example.org": "pending",
                      "confirmed@example.org": "confirmed",
                      "unsubscribed@example.org": "unsubscribed"}

    raw = _raw(app)
    assert _post(raw, "warm@example.org").status_code == 202  # snapshots cached, as in service
    seen: dict[str, list[str]] = {}
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, parameters, context, executemany):
        seen[current].append(_normalized(statement))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for current in ("unknown", "minimized", "pending", "confirmed", "unsubscribed"):
            seen[current] = []
            address = "nobody@example.org" if current == "unknown" else f"{current}@example.org"
            assert _post(raw, address).status_code == 202
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len({tuple(s) for s in seen.values()}) == 1, seen
    writes = [s for s in seen["unknown"] if not s.startswith(("SELECT", "select"))]
    assert len(writes) == 1 and writes[0].startswith("INSERT INTO outbox"), seen["unknown"]
    reads_state = re.compile(r"\b(FROM|JOIN|INTO|UPDATE)\s+\"?subscription\b", re.IGNORECASE)
    assert not any(reads_state.search(s) for s in seen["unknown"])  # the state is never read


def test_request_commits_one_intake_row_and_the_worker_does_the_rest(app, newsletter, mailbox):
    raw = _raw(app)
    before = utcnow()
    assert _post(raw, "Ida@Example.org", ip="198.51.100.23").status_code == 202
    after = utcnow()
    (row,) = _intake_rows(app)
    assert row.status == "pending"
    assert row.payload["ip"] == "198.51.100.23"
    assert row.payload["request"]["first_name"] == "Ida"
    with app.app_context():
        assert db.session.scalar(select(sa.func.count()).select_from(Subscription)) == 0
    assert mailbox.to("Ida@example.org") == []

    time.sleep(1.1)  # the worker runs clearly later than the request
    deliver(app)
    assert len(mailbox.to("Ida@example.org")) == 1
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        first = sub.events[0]
        assert first.kind == "signup_requested"
        # The proof has the request's own time and IP, not the worker's.
        assert before - timedelta(seconds=1) <= first.at <= after + timedelta(seconds=1)
        assert first.ip == "198.51.100.23"
        assert first.user_agent == UA["User-Agent"]
        assert sub.created_at == first.at
        assert sub.first_name == "Ida" and sub.fields == {"company": "ACME"}
        assert sub.events[1].kind == "confirmation_sent"
        assert sub.events[1].at - first.at >= timedelta(seconds=1)
    (row,) = _intake_rows(app)
    assert row.status == "done"
    assert row.payload == intake.PROCESSED  # the evidence lives on in the ledger only


def test_erasure_wins_over_a_queued_signup(app, client, newsletter, mailbox):
    raw = _raw(app)
    assert _post(raw, "erase-me@example.org").status_code == 202
    assert _post(raw, "keep-me@example.org").status_code == 202
    body = client.delete("/v1/contacts?email=erase-me@example.org", headers=AUTH).json
    assert body["found"] is True and body["subscriptions"] == []
    deliver(app)
    assert mailbox.to("erase-me@example.org") == []
    assert len(mailbox.to("keep-me@example.org")) == 1
    with app.app_context():
        assert db.session.scalars(select(Subscription.email)).all() == ["keep-me@example.org"]
    erased, kept = _intake_rows(app)
    assert erased.payload == intake.DROPPED_BY_ERASURE
    assert "erase-me" not in repr(erased.payload) + repr(erased.last_error)


def test_access_shows_a_signup_still_queued(app, client, newsletter):
    """Art. 15: a request received but not yet processed is data held about the person."""
    assert _post(_raw(app), "waiting@example.org", ip="198.51.100.23").status_code == 202
    assert _post(_raw(app), "other@example.org").status_code == 202
    body = client.get("/v1/contacts?email=Waiting@example.org", headers=AUTH).json
    assert body["subscriptions"] == []
    [queued] = body["queued_signups"]
    assert queued["ip"] == "198.51.100.23" and queued["list"] == "newsletter"
    assert queued["entered"]["email"] == "waiting@example.org"
    assert queued["entered"]["first_name"] == "Ida"
    assert queued["entered"]["fields"] == {"company": "ACME"}
    deliver(app)  # processed: now it is on the subscription, and no longer queued
    body = client.get("/v1/contacts?email=waiting@example.org", headers=AUTH).json
    assert body["queued_signups"] == [] and len(body["subscriptions"]) == 1


def test_unsubscribe_wins_over_a_signup_queued_before_it(app, client, newsletter, confirmed,
                                                          mailbox):
    unsubscribe = confirmed("leaving@example.org")
    mails = len(mailbox.to("leaving@example.org"))
    assert _post(_raw(app), "leaving@example.org").status_code == 202  # queued ...
    assert client.post(unsubscribe, follow_redirects=True).status_code == 200  # ... then the person leaves
    deliver(app)
    assert len(mailbox.to("leaving@example.org")) == mails  # no new confirmation mail
    with app.app_context():
        subs = db.session.scalars(select(Subscription)).all()
        assert [s.status for s in subs] == ["unsubscribed"]
        (repeated,) = [e for e in subs[0].events if e.kind == "signup_repeated"]
        assert repeated.details["action"] == "none (withdrawn after this request)"
        assert repeated.ip == "198.51.100.9"
        assert subs[0].first_name is None  # the withdrawal's deletion stands
    # A signup made after the withdrawal starts a fresh double opt-in, as before.
    signup(client, "leaving@example.org")
    deliver(app)
    assert len(mailbox.to("leaving@example.org")) == mails + 1


def test_retention_blanks_intake_rows_that_never_got_processed(app, newsletter):
    raw = _raw(app)
    assert _post(raw, "stuck@example.org").status_code == 202
    with app.app_context():
        retention.run(utcnow() + timedelta(days=1))
    assert _intake_rows(app)[0].payload["resolved_email"] == "stuck@example.org"
    with app.app_context():
        report = retention.run(utcnow() + timedelta(days=15))
    assert report.counts["intake_rows_blanked"] == 1
    with app.app_context():  # processed rows hold nothing to blank
        assert retention.run(utcnow() + timedelta(days=16)).counts["intake_rows_blanked"] == 0
    (row,) = _intake_rows(app)
    assert "stuck" not in repr(row.payload)


@pytest.mark.parametrize("body", [{"website": "http://spam.example"}])
def test_a_filled_honeypot_queues_nothing(app, newsletter, body):
    raw = _raw(app)
    response = raw.post("/v1/subscriptions", json={
        "email": "bot@example.org", "list": "newsletter", "consent_text_version": 1, **body})
    assert response.status_code == 202
    assert _intake_rows(app) == []


def test_a_signup_the_worker_crashed_on_is_processed_once_again(app, newsletter, mailbox):
    raw = _raw(app)
    assert _post(raw, "twice@example.org").status_code == 202
    (row,) = _intake_rows(app)
    with app.app_context():  # a worker took it and died before finishing
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.id == row.id).values(
            claimed_by="dead-worker", claimed_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    deliver(app)
    deliver(app)
    assert len(mailbox.to("twice@example.org")) == 1
    with app.app_context():
        kinds = db.session.scalars(select(ConsentEvent.kind).order_by(ConsentEvent.id)).all()
    assert kinds == ["signup_requested", "confirmation_sent"]


def _kill_intake_rows(app) -> None:
    """The intake rows as dead letters (their handler failed every attempt, e.g. a bug)."""
    with app.app_context():
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.kind == intake.KIND)
                           .values(status="dead", finished_at=utcnow(), last_error="boom"))
        db.session.commit()


def test_erasure_wins_over_a_dead_lettered_signup_revived_later(app, client, runner,
                                                                 newsletter, mailbox):
    """A signup whose intake row became a dead letter still holds the request's data: an
    erasure drops it too, so `optin outbox retry --all` never mails the erased address."""
    assert _post(_raw(app), "dead-erase@example.org").status_code == 202
    _kill_intake_rows(app)
    assert client.delete("/v1/contacts?email=dead-erase@example.org",
                         headers=AUTH).status_code == 200
    (row,) = _intake_rows(app)
    assert "dead-erase" not in repr(row.payload)
    assert runner.invoke(args=["outbox", "retry", "--all"]).exit_code == 0
    deliver(app)
    assert mailbox.to("dead-erase@example.org") == []
    with app.app_context():
        assert db.session.scalars(select(Subscription.email)).all() == []


def test_access_shows_a_signup_whose_intake_row_is_a_dead_letter(app, client, newsletter):
    """Art. 15: a dead-lettered intake row still holds what was entered, until retention."""
    assert _post(_raw(app), "dead-wait@example.org").status_code == 202
    _kill_intake_rows(app)
    body = client.get("/v1/contacts?email=dead-wait@example.org", headers=AUTH).json
    [queued] = body["queued_signups"]
    assert queued["entered"]["email"] == "dead-wait@example.org"


@pytest.mark.parametrize("kind", ["signup", "click"])
def test_a_failing_queued_request_keeps_no_address_or_ip_in_its_error(
        app, runner, newsletter, signed_up, monkeypatch, kind):
    """A queued signup or click whose apply fails with an error naming the address and the
    IP (as a library's message may): the error kept on the row, which the operator API and
    ``optin outbox list`` show, names them by pseudonym, as the log lines do."""
    address, ip = "anna@example.org", "198.51.100.9"
    raw = _raw(app)
    path = signed_up(address)
    if kind == "signup":  # a repeat: the row-by-row state machine, in an intake group
        assert _post(raw, address, ip=ip).status_code == 202
        name = "record_signup"
    else:
        assert raw.post(path, headers=UA, environ_base={"REMOTE_ADDR": ip}).status_code == 303
        name = "record_confirmation"

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003
        raise ValueError(f"cannot record this one for {address} from {ip}")

    monkeypatch.setattr(subscriptions, name, broken)
    deliver(app)
    with app.app_context():
        [row] = db.session.scalars(select(OutboxItem).where(
            OutboxItem.kind.in_(("signup_intake", "confirm_intake")),
            OutboxItem.status == "pending")).all()
        assert "ValueError" in (row.last_error or "")
    shown = [raw.get("/v1/outbox", headers=AUTH).get_data(as_text=True),
             runner.invoke(args=["outbox", "list"]).output]
    assert "cannot record this one" in shown[0] and "cannot record this one" in shown[1]
    for text in shown:
        assert address not in text and ip not in text


def test_a_failing_row_in_an_intake_group_logs_its_own_traceback(
        app, newsletter, signed_up, monkeypatch, caplog):
    """The group records its rows' failures after its loop, outside the handler's except:
    the log line still carries that failure's traceback, not "NoneType: None"."""
    signed_up("anna@example.org")
    assert _post(_raw(app), "anna@example.org").status_code == 202  # a repeat: row by row

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003
        raise ValueError("the state machine broke")

    monkeypatch.setattr(subscriptions, "record_signup", broken)
    deliver(app)
    [record] = [r for r in caplog.records if "attempt 1 failed" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert "broken" in caplog.text.split("attempt 1 failed", 1)[1]
