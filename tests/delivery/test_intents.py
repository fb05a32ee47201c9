"""Send intents: a worker killed between the relay's acceptance and its commit leaves the
mail's Message-ID in the ledger, and at most one duplicate (issue 14; hardening finding 9)."""

from __future__ import annotations

import time

from sqlalchemy import select

from optin.consent import ledger
from optin.extensions import db
from optin.models import ConsentEvent, MailIntent, OutboxItem

from ..conftest import deliver, refused_recipients, signup, wait_for

FAST = {"OPTIN_WORKER_LEASE_SECONDS": "2", "OPTIN_WORKER_HEARTBEAT_SECONDS": "0.5",
        "OPTIN_WORKER_THREADS": "1"}


def _sent(app) -> list[ConsentEvent]:
    with app.app_context():
        events = list(db.session.scalars(select(ConsentEvent).where(
            ConsentEvent.kind == "confirmation_sent").order_by(ConsentEvent.id)))
        db.session.expunge_all()
        return events


def test_a_worker_killed_after_the_relay_took_the_mail_leaves_it_in_the_ledger(
        app, client, newsletter, mailbox, worker_processes):
    assert signup(client, "crash@example.org").status_code == 202
    mailbox.delay = 1.5  # the relay has the mail; its answer (and the commit) are to come
    mailbox.keep_unanswered = True
    first = worker_processes.start(**FAST)
    assert mailbox.receiving.wait(30)
    worker_processes.kill(first)  # between the relay's acceptance and the worker's commit
    wait_for(lambda: len(mailbox.to("crash@example.org")) == 1, timeout=10)
    mailbox.delay = 0.0
    worker_processes.start(**FAST)
    wait_for(lambda: len(_sent(app)) == 2, timeout=30)
    time.sleep(1)

    received = [str(m["Message-ID"]) for m in mailbox.to("crash@example.org")]
    assert len(received) == 2  # at most one duplicate
    events = _sent(app)
    # Every Message-ID that left is in the proof: the first from its intent, with a note.
    assert [e.details["message_id"] for e in events] == received
    assert "may have left" in events[0].details["recorded"]
    assert "recorded" not in events[1].details
    with app.app_context():
        assert db.session.scalar(select(MailIntent.id)) is None
        assert db.session.scalar(select(OutboxItem.status)) == "done"
        assert ledger.verify(db.session).ok


def test_a_delivered_mail_leaves_no_intent_and_a_refused_one_none_in_the_ledger(
        app, client, newsletter, mailbox):
    signup(client, "fine@example.org")
    with refused_recipients(mailbox, "refused"):
        signup(client, "refused@example.org")
        deliver(app)
    events = _sent(app)
    assert len(events) == 1 and "recorded" not in events[0].details
    with app.app_context():
        assert db.session.scalar(select(MailIntent.id)) is None
