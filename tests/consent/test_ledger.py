"""The hash chain: appends verify; any modified, reordered or deleted event is caught."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select, update

from optin.config import current_settings
from optin.consent import ledger
from optin.consent.addresses import address_hash
from optin.extensions import db
from optin.models import ConsentEvent, EventKind, Subscription


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


def test_redacted_content_still_verifies_but_chain_is_checked(history, runner):
    """Minimization blanks content; the chain covers the content hash, not the content."""
    _minimize_all(history, runner)
    sub_id, events = _first_sub_events(history)
    assert events[0].redacted_at is not None and events[-1].kind == EventKind.MINIMIZED
    assert _verify(history).ok
    with history.app_context():
        db.session.execute(update(ConsentEvent.__table__)
                           .where(ConsentEvent.id == events[1].id).values(content_hash="0" * 64))
        db.session.commit()
    assert not _verify(history).ok


def _minimize_all(app, runner) -> None:
    """Both records lapsed, then minimized by the retention job itself."""
    with app.app_context():
        db.session.execute(update(Subscription.__table__).values(
            status="unsubscribed", retain_until=datetime(2020, 1, 1, tzinfo=UTC)))
        db.session.commit()
    assert runner.invoke(args=["retention", "run"]).exit_code == 0


def _redact(app, event_id: int, **values) -> None:
    with app.app_context():
        db.session.execute(update(ConsentEvent.__table__).where(ConsentEvent.id == event_id)
                           .values(redacted_at=datetime.now(UTC), **values))
        db.session.commit()


@pytest.mark.parametrize("edit", [
    {"ip": "10.9.9.9"},  # the confirmation's IP swapped
    {"kind": "accessed", "details": {}},  # a withdrawal hidden as a look-up
    {"at": datetime(2020, 1, 1, tzinfo=UTC)},  # the consent's date moved
])
def test_an_event_marked_minimized_by_hand_is_caught(history, runner, edit):
    """Marking an event minimized was enough to edit its content unseen: the content hash
    is not checked for a minimized event. Only the retention job minimizes, and it appends
    a `minimized` event at that moment, so an event marked minimized without one is an edit."""
    sub_id, events = _first_sub_events(history)
    victim = next(e for e in events if e.kind in (EventKind.UNSUBSCRIBED, EventKind.CONFIRMED))
    _redact(history, victim.id, **edit)
    report = _verify(history)
    assert any(f"subscription {sub_id}: event #{victim.seq}" in p for p in report.problems), \
        report.problems
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1 and "TAMPERED" in result.output


def test_a_minimized_event_edited_afterwards_is_caught(history, runner):
    """After a real minimization, a minimized event may hold no IP, user agent or detail
    beyond what minimization keeps: one written back in is an edit."""
    _minimize_all(history, runner)
    sub_id, events = _first_sub_events(history)
    with history.app_context():
        db.session.execute(update(ConsentEvent.__table__).where(ConsentEvent.id == events[0].id)
                           .values(details={"email": "someone-else@example.org"}))
        db.session.commit()
    assert not _verify(history).ok
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 1


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


HOSTILE_DETAILS = [
    {}, {"a": "plain"}, {"bs": "\x08"}, {"ff": "x\x0cy"}, {"del": "\x7f"},
    {"c": "\x0e\x1a"}, {"nul": "a\x00b", "tab": "a\tb\nc\r"}, {"bell": "\x07", "ff": "\x0c",
    "bs": "\x08", "vt": "\x0b", "us": "\x1f", "del": "x\x7fy"}, {"s": "\ud800 lone"},
    {"k\x00ey": {"nested": ["\x01", "ok", None, 3, {"deep\x1e": "v"}]}},
    {"backslash": "a\\b \\f \\u0000 \\\\u0001"}, {"quote": '"\u2028\u2029é\U0001f600'},
    {"evidence": {"OPTIN_TIME": "2021-01-01 10:00:00", "OPTIN_IP": None}, "row": 7},
]


@pytest.mark.parametrize("details", HOSTILE_DETAILS)
def test_details_serialized_once_are_what_event_row_stores_and_hashes(details):
    """chained_event (the import's COPY path) stores and hashes exactly what event_row
    does: details made storable as storable_json makes them, and the content hash of
    canonical_content over them, though the details are serialized only once."""
    from types import SimpleNamespace

    from optin.models import storable_json

    at = datetime(2026, 12, 1, 10, 0, 0, 5, tzinfo=UTC)
    row, text = ledger.chained_event(7, 2, "f" * 64, EventKind.CONSENT_IMPORTED, origin="import",
                                     at=at, ip="198.51.100.7\x00", user_agent=None,
                                     consent_text_id=3, details=details)
    assert row == ledger.event_row(7, 2, "f" * 64, "consent_imported", origin="import",
                                   at=at, ip="198.51.100.7\x00", consent_text_id=3,
                                   details=details)
    assert row["details"] == storable_json(details)
    assert json.loads(text) == row["details"]
    assert row["content_hash"] == ledger.content_hash(SimpleNamespace(**row))


@pytest.mark.parametrize("rehash", [True, False])
def test_an_address_swapped_in_the_subscription_row_is_caught(history, runner, rehash):
    """The chain does not cover the subscription row: an insider who wrote another address
    (and its keyed hash) into it got a proof, "ledger intact", that the other person
    consented. The row's address must be the one its signup recorded, and its hash the
    address's."""
    sub_id, _ = _first_sub_events(history)
    with history.app_context():
        digest = address_hash("mallory@example.org", current_settings().hash_key)
        db.session.execute(update(Subscription.__table__).where(Subscription.id == sub_id)
                           .values(email="mallory@example.org",
                                   **({"email_hash": digest} if rehash else {})))
        db.session.commit()
    problems = _verify(history).problems
    assert any(f"subscription {sub_id}: its address is not the one its event #1" in p
               for p in problems), problems
    assert any("its address hash is not its address's" in p for p in problems) is not rehash
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1 and "TAMPERED" in result.output
