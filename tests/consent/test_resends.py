"""The resend button behind an expired confirmation link: one queued row per request.

The page answers the same whatever became of the signup, so the request must do the
same work too; the worker decides whether a mail goes out."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from optin.consent import intake, resends
from optin.extensions import db
from optin.models import ConsentEvent, OutboxItem, Subscription, utcnow
from optin.privacy import retention

from ..conftest import PG_URL, answered_under_lock, deliver


def _rows(app) -> list[OutboxItem]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxItem).where(
            OutboxItem.kind == resends.KIND).order_by(OutboxItem.id)))
        db.session.expunge_all()
        return rows


def _normalized(statement: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"'[^']*'|\b\d+\b", "?", statement)).strip()


def _resent(app, address: str) -> int:
    with app.app_context():
        return len(list(db.session.scalars(select(ConsentEvent.id).join(Subscription).where(
            Subscription.email == address,
            ConsentEvent.kind == "confirmation_resend_requested"))))


def test_the_request_issues_the_same_statement_whether_pending_confirmed_or_withdrawn(
        app, client, signed_up):
    warm = signed_up("warm@example.org")
    pending, confirmed, gone = (signed_up(a) for a in (
        "pending@example.org", "confirmed@example.org", "gone@example.org"))
    assert client.post(confirmed).status_code == 303
    assert client.post(gone).status_code == 303
    deliver(app)
    with app.app_context():
        db.session.execute(sa.update(Subscription).where(Subscription.email == "gone@example.org")
                           .values(status="unsubscribed", withdrawn_at=utcnow()))
        db.session.commit()
    assert client.post(f"{warm}/resend").status_code == 303  # compiled, as in service
    with app.app_context():
        engine = db.engine
    seen: dict[str, list[str]] = {}
    current = ""

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT"):
            seen[current].append(_normalized(statement))

    for current, path in (("pending", pending), ("confirmed", confirmed), ("gone", gone)):
        seen[current] = []
        sa.event.listen(engine, "before_cursor_execute", record)
        try:
            assert client.post(f"{path}/resend").status_code == 303
        finally:
            sa.event.remove(engine, "before_cursor_execute", record)
    assert len({tuple(s) for s in seen.values()}) == 1, seen
    (statement,) = seen["pending"]
    assert statement.startswith("INSERT INTO outbox") and "FOR UPDATE" not in statement.upper()


def test_the_worker_sends_a_fresh_mail_for_a_pending_signup_only(
        app, client, signed_up, mailbox):
    pending, confirmed = signed_up("pending@example.org"), signed_up("confirmed@example.org")
    assert client.post(confirmed).status_code == 303
    deliver(app)
    with app.app_context():  # past the resend interval
        db.session.execute(sa.update(Subscription).values(
            last_mail_requested_at=utcnow() - timedelta(days=1)))
        db.session.commit()
    before = {a: len(mailbox.to(a)) for a in ("pending@example.org", "confirmed@example.org")}
    for path in (pending, confirmed):
        assert client.post(f"{path}/resend").status_code == 303
    assert [r.status for r in _rows(app)] == ["pending", "pending"]
    deliver(app)
    assert len(mailbox.to("pending@example.org")) == before["pending@example.org"] + 1
    assert len(mailbox.to("confirmed@example.org")) == before["confirmed@example.org"]
    assert _resent(app, "pending@example.org") == 1 and _resent(app, "confirmed@example.org") == 0
    assert all(r.status == "done" and r.payload == intake.PROCESSED for r in _rows(app))


def test_retention_blanks_a_request_the_worker_never_took(app, client, signed_up):
    path = signed_up()
    assert client.post(f"{path}/resend").status_code == 303
    with app.app_context():
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.kind == resends.KIND)
                           .values(status="dead", last_error="boom"))
        db.session.commit()
        retention.run(utcnow() + timedelta(days=15))
    (row,) = _rows(app)
    assert row.status == "dead" and row.payload == intake.PROCESSED


@pytest.mark.skipif(not PG_URL, reason="row locks between transactions: PostgreSQL only")
def test_the_request_does_not_wait_for_a_delivery_holding_the_subscription(
        app, client, signed_up, mailbox):
    path = signed_up()
    with app.app_context():
        sub_id = db.session.scalar(select(Subscription.id))
    under_lock, answer = answered_under_lock(app, sub_id, lambda: client.post(f"{path}/resend"))
    assert under_lock and answer.status_code == 303
