"""The fresh-unsubscribe-link form: the request commits one row; the worker looks up.

The form is posted by anyone with any address, so it must not answer a subscribed
address differently from an unknown one, in content or in the work it does. These
tests post with the suite's client and run the worker as the service would.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from optin.consent import intake, relink
from optin.extensions import db
from optin.models import ConsentEvent, OutboxItem, Subscription, utcnow
from optin.privacy import retention

from ..conftest import PG_URL, answered_under_lock, deliver

FORM = "/unsubscribe/link"


def _ask(client, address: str):
    return client.post(FORM, data={"email": address, "locale": "de"},
                       environ_base={"REMOTE_ADDR": "203.0.113.7"})


def _rows(app) -> list[OutboxItem]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxItem).where(
            OutboxItem.kind == relink.KIND).order_by(OutboxItem.id)))
        db.session.expunge_all()
        return rows


def _normalized(statement: str) -> str:
    """A statement's text with its literals out (the values differ per request)."""
    return re.sub(r"\s+", " ", re.sub(r"'[^']*'|\b\d+\b", "?", statement)).strip()


def test_the_request_issues_the_same_statements_for_every_address(
        app, client, confirmed, signed_up):
    """Confirmed, pending, withdrawn and unknown: one INSERT and the COMMIT, nothing that
    reads the address's subscriptions or waits for their locks."""
    confirmed("anna@example.org")
    signed_up("pending@example.org")
    gone = confirmed("gone@example.org")
    assert client.post(gone).status_code == 303
    deliver(app)
    assert _ask(client, "warm@example.org").status_code == 303  # compiled, as in service
    with app.app_context():
        engine = db.engine
    seen: dict[str, list[str]] = {}
    current = ""

    def record(conn, cursor, statement, parameters, context, executemany):
        seen[current].append(_normalized(statement))

    for current in ("anna@example.org", "pending@example.org", "gone@example.org",
                    "nobody@example.org"):
        seen[current] = []
        sa.event.listen(engine, "before_cursor_execute", record)
        try:
            assert _ask(client, current).status_code == 303
        finally:
            sa.event.remove(engine, "before_cursor_execute", record)
    assert len({tuple(s) for s in seen.values()}) == 1, seen
    (statement,) = seen["anna@example.org"]
    assert statement.startswith("INSERT INTO outbox"), statement


def test_the_queued_request_holds_no_address_and_the_worker_mails_the_link(
        app, client, confirmed, mailbox):
    """The row keeps the address's keyed hash only; the worker records the request at the
    request's time (not its own) and the mail goes out; the row is blanked after."""
    confirmed("anna@example.org")
    deliver(app)
    before = len(mailbox.to("anna@example.org"))
    assert _ask(client, "Anna@Example.org").status_code == 303
    (row,) = _rows(app)
    assert row.status == "pending" and "anna" not in str(row.payload).lower()
    assert "203.0.113.7" not in str(row.payload)
    asked_at = datetime.fromisoformat(row.payload["at"])
    time.sleep(0.05)  # the worker comes later than the request
    deliver(app)
    (row,) = _rows(app)
    assert row.status == "done" and row.payload == intake.PROCESSED
    assert len(mailbox.to("anna@example.org")) == before + 1
    with app.app_context():
        requested = db.session.scalar(select(ConsentEvent).join(Subscription).where(
            Subscription.email == "anna@example.org",
            ConsentEvent.kind == "unsubscribe_link_requested"))
        assert requested is not None
        assert requested.at.replace(tzinfo=asked_at.tzinfo) == asked_at


def test_an_invalid_address_queues_nothing(app, client, newsletter):
    for address in ("not an address", "", "a@b@c"):
        assert _ask(client, address).status_code == 303
    assert _rows(app) == []


def test_retention_blanks_a_request_the_worker_never_took(app, client, confirmed):
    """A dead-lettered request keeps the address's hash no longer than an unconfirmed
    signup is kept."""
    confirmed("anna@example.org")
    assert _ask(client, "anna@example.org").status_code == 303
    with app.app_context():
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.kind == relink.KIND)
                           .values(status="dead", last_error="boom"))
        db.session.commit()
        retention.run(utcnow() + timedelta(days=15))
    (row,) = _rows(app)
    assert row.status == "dead" and row.payload == intake.PROCESSED


@pytest.mark.skipif(not PG_URL, reason="row locks between transactions: PostgreSQL only")
def test_the_request_does_not_wait_for_a_delivery_holding_the_subscription(
        app, client, confirmed, mailbox):
    """A delivery group holds a subscription's row lock while the relay is slow; the form's
    request takes no lock, so it is answered while the lock is held (it used to wait for
    it: a subscribed address answered late, an unknown one at once)."""
    confirmed("anna@example.org")
    deliver(app)
    with app.app_context():
        sub_id = db.session.scalar(select(Subscription.id).where(
            Subscription.email == "anna@example.org"))
    under_lock, answer = answered_under_lock(app, sub_id,
                                             lambda: _ask(client, "anna@example.org"))
    assert under_lock
    assert answer.status_code == 303
    before = len(mailbox.to("anna@example.org"))
    deliver(app)
    assert len(mailbox.to("anna@example.org")) == before + 1
