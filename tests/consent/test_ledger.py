"""The hash chain: appends verify; any modified, reordered or deleted event is caught."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select, update

from optin.consent import ledger
from optin.extensions import db
from optin.models import ConsentEvent, Subscription


@pytest.fixture
def history(app, client, confirmed):
    """Two subscribers with a few events each; returns the app."""
    client.post(confirmed("k@example.org"))  # signup, mail, confirmed, welcome, sync, unsubscribed…
    confirmed("l@example.org")
    return app


def _verify(app):
    with app.app_context():
        return ledger.verify(db.session)


def _first_sub_events(app):
    with app.app_context():
        sub_id = db.session.scalar(select(Subscription.id).order_by(Subscription.id))
        return sub_id, db.session.scalars(
            select(ConsentEvent).where(ConsentEvent.subscription_id == sub_id)
            .order_by(ConsentEvent.seq)).all()


def test_intact_ledger_verifies(history, runner):
    report = _verify(history)
    assert report.ok, report.problems
    assert report.subscriptions == 2 and report.events >= 8
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0 and "ledger OK" in result.output


@pytest.mark.parametrize("tamper", ["modify_ip", "modify_time", "modify_details", "delete_middle",
                                    "delete_last", "reorder", "move_to_other_subscription"])
def test_tampering_is_caught(history, runner, tamper):
    sub_id, events = _first_sub_events(history)
    with history.app_context():
        table = ConsentEvent.__table__
        if tamper == "modify_ip":
            db.session.execute(update(table).where(table.c.id == events[0].id)
                               .values(ip="10.9.9.9"))
        elif tamper == "modify_time":
            db.session.execute(update(table).where(table.c.id == events[2].id)
                               .values(at=datetime(2020, 1, 1, tzinfo=UTC)))
        elif tamper == "modify_details":
            db.session.execute(update(table).where(table.c.id == events[0].id)
                               .values(details={"email": "someone-else@example.org"}))
        elif tamper == "delete_middle":
            db.session.execute(delete(table).where(table.c.id == events[1].id))
        elif tamper == "delete_last":
            db.session.execute(delete(table).where(table.c.id == events[-1].id))
        elif tamper == "reorder":
            a, b = events[1], events[2]
            db.session.execute(update(table).where(table.c.id == a.id).values(seq=-1))
            db.session.execute(update(table).where(table.c.id == b.id).values(seq=a.seq))
            db.session.execute(update(table).where(table.c.id == a.id).values(seq=b.seq))
        elif tamper == "move_to_other_subscription":
            other = db.session.scalar(select(Subscription.id).where(Subscription.id != sub_id))
            db.session.execute(update(table).where(table.c.id == events[-1].id)
                               .values(subscription_id=other, seq=999))
        db.session.commit()
    report = _verify(history)
    assert not report.ok
    assert any(f"subscription {sub_id}" in p for p in report.problems), report.problems
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1
    assert "TAMPERED" in result.output


def test_redacted_content_still_verifies_but_chain_is_checked(history):
    """Minimization blanks content; the chain covers the content hash, not the content."""
    sub_id, events = _first_sub_events(history)
    with history.app_context():
        db.session.execute(update(ConsentEvent.__table__)
                           .where(ConsentEvent.subscription_id == sub_id)
                           .values(ip=None, user_agent=None, details={},
                                   redacted_at=datetime.now(UTC)))
        db.session.commit()
    assert _verify(history).ok
    with history.app_context():
        db.session.execute(update(ConsentEvent.__table__)
                           .where(ConsentEvent.id == events[1].id).values(content_hash="0" * 64))
        db.session.commit()
    assert not _verify(history).ok


def test_chain_hash_depends_on_previous_sequence_and_content():
    a = ledger.chain_hash(None, 1, "c" * 64)
    assert a != ledger.chain_hash(None, 2, "c" * 64)
    assert a != ledger.chain_hash(None, 1, "d" * 64)
    assert a != ledger.chain_hash("e" * 64, 1, "c" * 64)
    assert a == ledger.chain_hash(ledger.GENESIS, 1, "c" * 64)


def test_append_now_and_append_continue_one_chain_in_a_transaction(app, client, newsletter):
    """The mail worker's plain-SQL append keeps the in-memory head, so an ORM append after it
    in the same transaction gets the next number and the chain verifies."""
    from ..conftest import signup

    assert signup(client, "m@example.org").status_code == 202
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        row = ledger.append_now(sub, "confirmation_sent", origin="worker", details={"n": 1})
        event = ledger.append(sub, "bounced", origin="activecampaign")
        db.session.commit()
        assert (row["seq"], event.seq) == (2, 3)
        stored = db.session.scalar(select(Subscription))
        assert (stored.ledger_seq, stored.ledger_head) == (3, event.chain_hash)
        assert ledger.verify(db.session).ok
