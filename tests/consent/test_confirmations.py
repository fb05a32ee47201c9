"""The confirmation intake: the click commits one row; the worker applies the consent.

These tests click with a plain ``FlaskClient`` (the suite's default client settles the
intake after each click, see conftest), so they see what the request alone did, then
run the worker as the service would.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy import select

from optin.consent import confirmations, subscriptions
from optin.extensions import db
from optin.models import ConsentEvent, OutboxItem, Subscription, utcnow
from optin.privacy import retention

from ..conftest import ADMIN_TOKEN, PG_URL, answered_under_lock, deliver, links, wait_for

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
UA = {"User-Agent": "Mozilla/5.0 (confirm test)"}
CONFIRMED = "Ihre Anmeldung ist bestätigt"  # the page after the click (German list)


def _raw(app) -> FlaskClient:
    """A client that leaves the click to the worker."""
    return FlaskClient(app, app.response_class, use_cookies=True)


def _click(client: FlaskClient, path: str, ip: str = "203.0.113.9"):
    return client.post(path, headers=UA, environ_base={"REMOTE_ADDR": ip})


def _rows(app) -> list[OutboxItem]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxItem).where(
            OutboxItem.kind == confirmations.KIND).order_by(OutboxItem.id)))
        db.session.expunge_all()
        return rows


def _sub(app, address: str = "anna@example.org") -> Subscription:
    with app.app_context():
        sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
        db.session.expunge_all()
        return sub


def _kinds(app, address: str = "anna@example.org") -> list[str]:
    with app.app_context():
        return list(db.session.scalars(
            select(ConsentEvent.kind).join(Subscription).where(Subscription.email == address)
            .order_by(ConsentEvent.seq)))


def _shows_button(html: str, path: str) -> bool:
    return f'action="{path}"' in html


def test_click_is_queued_the_page_says_confirmed_and_the_worker_records_the_click(
        app, newsletter, signed_up, mailbox):
    path = signed_up()
    raw = _raw(app)
    before = utcnow()
    answer = _click(raw, path, ip="203.0.113.9")
    after = utcnow()
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"{path}?done=1")
    (row,) = _rows(app)
    assert row.status == "pending" and row.payload["ip"] == "203.0.113.9"
    assert _sub(app).status == "pending"  # the request changed no state

    page = raw.get(answer.headers["Location"]).get_data(as_text=True)
    assert CONFIRMED in page and not _shows_button(page, path)
    again = raw.get(path).get_data(as_text=True)  # the mail's link opened again: no button
    assert "bereits bestätigt" in again and not _shows_button(again, path)

    time.sleep(1.1)  # the worker runs clearly later than the click
    deliver(app)
    sub = _sub(app)
    assert sub.status == "confirmed"
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent).where(ConsentEvent.kind == "confirmed"))
        # The proof has the click's own time, IP and user agent, not the worker's.
        assert before - timedelta(seconds=1) <= event.at <= after + timedelta(seconds=1)
        assert event.ip == "203.0.113.9" and event.user_agent == UA["User-Agent"]
        assert sub.confirmed_at == event.at
    (row,) = _rows(app)
    assert row.status == "done" and row.payload == {"processed": True, "outcome": "confirmed"}
    assert len(mailbox.to("anna@example.org")) == 2  # the confirmation mail, the welcome mail
    page = raw.get(answer.headers["Location"]).get_data(as_text=True)
    assert CONFIRMED in page and not _shows_button(page, path)


def test_a_real_worker_process_applies_the_click_and_mails_the_welcome(
        app, newsletter, signed_up, mailbox, worker_processes):
    """Through HTTP as the recipient, with an ``optin worker`` process doing the rest."""
    path = signed_up()
    raw = _raw(app)
    answer = _click(raw, path, ip="203.0.113.44")
    assert answer.status_code == 303
    assert CONFIRMED in raw.get(answer.headers["Location"]).get_data(as_text=True)
    worker_processes.start()
    wait_for(lambda: len(mailbox.to("anna@example.org")) == 2, timeout=30)  # the welcome mail
    assert _sub(app).status == "confirmed"
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent).where(ConsentEvent.kind == "confirmed"))
        assert event.ip == "203.0.113.44" and event.user_agent == UA["User-Agent"]
    page = raw.get(answer.headers["Location"]).get_data(as_text=True)
    assert CONFIRMED in page and not _shows_button(page, path)


def test_done_without_a_click_still_shows_the_button(app, newsletter, signed_up):
    """?done=1 typed by hand (or a scanner following the redirect's URL) is no consent."""
    path = signed_up()
    page = _raw(app).get(f"{path}?done=1").get_data(as_text=True)
    assert _shows_button(page, path) and CONFIRMED not in page


def test_a_double_click_confirms_once(app, newsletter, signed_up, mailbox):
    path = signed_up()
    raw = _raw(app)
    assert _click(raw, path, ip="203.0.113.1").status_code == 303
    assert _click(raw, path, ip="203.0.113.2").status_code == 303  # still queued: same answer
    deliver(app)
    assert _click(raw, path, ip="203.0.113.3").status_code == 303  # applied: same answer
    deliver(app)
    assert _kinds(app).count("confirmed") == 1
    with app.app_context():
        ip = db.session.scalar(select(ConsentEvent.ip).where(ConsentEvent.kind == "confirmed"))
    assert ip == "203.0.113.1"  # the first click is the consent
    assert [r.payload.get("outcome") for r in _rows(app)] == [
        "confirmed", "already_confirmed", "already_confirmed"]
    assert len(mailbox.to("anna@example.org")) == 2  # one welcome mail


def test_a_click_after_unsubscribing_gets_the_ended_page_and_queues_nothing(
        app, client, newsletter, confirmed, mailbox):
    unsubscribe = confirmed()
    confirm_link = links(mailbox.to("anna@example.org")[0])["confirm"]
    assert client.post(unsubscribe).status_code == 303
    queued_before = len(_rows(app))
    answer = _click(_raw(app), confirm_link)
    assert answer.status_code == 200 and "beendet" in answer.get_data(as_text=True)
    assert len(_rows(app)) == queued_before
    assert _sub(app).status == "unsubscribed"


def test_an_unsubscribe_after_a_queued_click_wins(app, newsletter, signed_up, mailbox):
    path = signed_up()
    assert _click(_raw(app), path).status_code == 303
    sub = _sub(app)
    with app.app_context():  # the pending signup is withdrawn before the worker takes the click
        assert subscriptions.unsubscribe(sub.id, sub.nonce, subscriptions.Client()) == "unsubscribed"
    deliver(app)
    assert _sub(app).status == "unsubscribed"
    assert "confirmed" not in _kinds(app)
    assert len(mailbox.to("anna@example.org")) == 1  # no welcome mail after the withdrawal
    with app.app_context():  # nothing queued for ActiveCampaign either
        kinds = db.session.scalars(select(OutboxItem.kind)).all()
    assert "ac_subscribe" not in kinds and "welcome_mail" not in kinds
    (row,) = _rows(app)
    assert row.status == "done" and row.payload == {"processed": True, "outcome": "invalid"}


def test_an_expired_link_gets_the_expired_page_and_queues_nothing(app, newsletter, signed_up,
                                                                  monkeypatch):
    from itsdangerous.timed import TimestampSigner

    path = signed_up()
    monkeypatch.setattr(TimestampSigner, "get_timestamp",
                        lambda self: int(time.time() + 73 * 3600))  # past the link's 72 hours
    assert _click(_raw(app), path).status_code == 410
    assert _rows(app) == []
    assert _sub(app).status == "pending"


def test_an_altered_link_gets_the_invalid_page_and_queues_nothing(app, newsletter, signed_up):
    path = signed_up()
    assert _click(_raw(app), path[:-2] + ("AA" if not path.endswith("AA") else "BB")).status_code == 404
    assert _rows(app) == []


def test_erasure_drops_a_queued_click(app, client, newsletter, signed_up, mailbox):
    path = signed_up()
    assert _click(_raw(app), path, ip="203.0.113.77").status_code == 303
    export = client.get("/v1/contacts?email=anna@example.org", headers=AUTH).json
    [queued] = export["queued_confirmations"]  # Art. 15: the click's data is held too
    assert queued["ip"] == "203.0.113.77" and queued["user_agent"] == UA["User-Agent"]
    assert client.delete("/v1/contacts?email=anna@example.org", headers=AUTH).status_code == 200
    deliver(app)
    assert "confirmed" not in _kinds(app)
    assert len(mailbox.to("anna@example.org")) == 1  # no welcome mail
    (row,) = _rows(app)
    assert row.payload == confirmations.DROPPED_BY_ERASURE
    assert "203.0.113.77" not in repr(row.payload) + repr(row.last_error)


def test_a_click_the_worker_fails_on_is_retried_then_kept_as_a_dead_letter(
        app, runner, newsletter, signed_up, monkeypatch):
    path = signed_up()
    assert _click(_raw(app), path).status_code == 303

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(subscriptions, "record_confirmation", broken)
    deliver(app)
    (row,) = _rows(app)
    assert row.status == "pending" and row.attempts == 1 and "boom" in row.last_error
    with app.app_context():  # every attempt fails: a dead letter, still holding the click
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.id == row.id).values(
            status="dead", finished_at=utcnow()))
        db.session.commit()
    page = _raw(app).get(path).get_data(as_text=True)
    assert not _shows_button(page, path)  # the consent was given; an operator will retry it
    monkeypatch.undo()
    assert runner.invoke(args=["outbox", "retry", "--all"]).exit_code == 0
    deliver(app)
    assert _sub(app).status == "confirmed"
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent).where(ConsentEvent.kind == "confirmed"))
        assert event.ip == "203.0.113.9"


def test_retention_blanks_a_click_that_never_got_applied(app, newsletter, signed_up):
    """A dead-lettered click keeps its IP and user agent no longer than an unconfirmed
    signup is kept, even on a subscription retention does not minimize (confirmed)."""
    path = signed_up()
    raw = _raw(app)
    assert _click(raw, path).status_code == 303
    deliver(app)
    assert _click(raw, path).status_code == 303
    with app.app_context():
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.kind == confirmations.KIND,
                                                       OutboxItem.status == "pending")
                           .values(status="dead", last_error="boom"))
        db.session.commit()
        retention.run(utcnow() + timedelta(days=15))
    applied, dead = _rows(app)
    assert _sub(app).status == "confirmed"
    assert dead.status == "dead" and dead.payload == confirmations.PROCESSED


def _normalized(statement: str) -> str:
    """A statement's text with its literals out (the ids and values differ per request)."""
    return re.sub(r"\s+", " ", re.sub(r"'[^']*'|\b\d+\b", "?", statement)).strip()


def test_a_click_issues_the_same_statements_for_every_state_of_the_confirmation(
        app, newsletter, signed_up):
    """A first click, a click while the first is queued and one after the worker applied
    it: one INSERT … SELECT and the COMMIT, whatever the state, like the baseline."""
    warm, path = signed_up("warm@example.org"), signed_up()
    raw = _raw(app)
    assert _click(raw, warm).status_code == 303  # caches and compiled statements, as in service
    with app.app_context():
        engine = db.engine
    seen: dict[str, list[str]] = {}

    def record(conn, cursor, statement, parameters, context, executemany):
        seen[current].append(_normalized(statement))

    for current in ("pending", "queued", "confirmed"):
        if current == "confirmed":
            deliver(app)
            assert _sub(app).status == "confirmed"
        seen[current] = []
        sa.event.listen(engine, "before_cursor_execute", record)
        try:
            assert _click(raw, path).status_code == 303
        finally:
            sa.event.remove(engine, "before_cursor_execute", record)
    assert len({tuple(s) for s in seen.values()}) == 1, seen
    (statement,) = seen["pending"]
    assert statement.startswith("INSERT INTO outbox"), statement
    assert "FOR UPDATE" not in statement.upper()  # never waits on a lock
    columns = statement.split(")", 1)[0]  # no foreign key to check: no share lock either
    assert "subscription_id" not in columns, statement


@pytest.mark.skipif(not PG_URL, reason="row locks between transactions: PostgreSQL only")
def test_a_click_does_not_wait_for_a_worker_holding_the_subscriptions_lock(
        app, newsletter, signed_up):
    """A worker applying a confirmation (or sending a mail) holds the subscription's row
    lock; the click neither locks the row nor checks a foreign key to it, so it is
    answered while the lock is held (it would otherwise wait until the lock goes)."""
    path = signed_up()
    sub = _sub(app)
    under_lock, answer = answered_under_lock(app, sub.id, lambda: _click(_raw(app), path))
    assert under_lock
    assert answer.status_code == 303
