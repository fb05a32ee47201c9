"""Insider edit: change a consent event's details, recompute its hashes (and the chain after it)
with optin's own functions, then see whether `optin ledger verify` notices."""

from __future__ import annotations

import sys

from sqlalchemy import select

from optin import create_app
from optin.consent import ledger
from optin.extensions import db
from optin.models import ConsentEvent, Subscription

addr = sys.argv[1]
app = create_app()
with app.app_context():
    sub = db.session.scalar(
        select(Subscription).where(Subscription.email == addr, Subscription.status == "confirmed")
    )
    events = list(
        db.session.scalars(
            select(ConsentEvent).where(ConsentEvent.subscription_id == sub.id).order_by(ConsentEvent.seq)
        )
    )
    first = events[0]
    first.details = {**first.details, "source_url": "https://forged.example/landing", "locale": "en"}
    previous = None
    for ev in events:
        ev.content_hash = ledger.content_hash(ev)
        ev.chain_hash = ledger.chain_hash(previous, ev.seq, ev.content_hash)
        previous = ev.chain_hash
    sub.ledger_head = previous
    db.session.commit()
    print("rewrote", len(events), "events of subscription", sub.id)
