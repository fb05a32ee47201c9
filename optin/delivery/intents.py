"""Send intents: the Message-ID of a mail is on record before the mail leaves.

The ledger records a sent mail in the delivery's transaction, after the relay took
it. A worker that dies between the two (kill -9, a lost host) would leave a mail that
left but is not in the proof, and the row's next delivery would send a second one
(hardening finding 9). So just before the SMTP transaction the mail's Message-ID and
ledger details are written to ``mail_intent`` on a connection of their own, committed
at once; the delivery's transaction deletes the intent together with writing the
ledger event. An intent still there when its outbox row is delivered again is put in
the ledger first (``settle``), marked as a mail that may have left, and the new
delivery sends at most one duplicate.

River and Oban do the same for jobs with outside effects (a unique key recorded
before the call); here the outside effect is a mail, and the record is the proof.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from sqlalchemy import delete, insert, select

from optin.consent import ledger
from optin.extensions import db
from optin.models import EventKind, MailIntent, Subscription, utcnow

log = logging.getLogger(__name__)

#: The outbox row being delivered (set by ``outbox.deliver``), which an intent names.
CURRENT_ROW: ContextVar[int | None] = ContextVar("optin_outbox_row", default=None)
MAY_HAVE_LEFT = ("from the send intent: the worker stopped between handing the mail to the "
                 "relay and recording it, so it may have left")


def record(subscription_id: int, kind: EventKind, details: dict[str, Any]) -> int | None:
    """Write the intent on a connection of its own and commit it; its id (None outside a
    delivery, e.g. a test sending directly)."""
    outbox_id = CURRENT_ROW.get()
    if outbox_id is None:
        return None
    with db.engine.begin() as conn:
        return int(conn.execute(insert(MailIntent).values(
            outbox_id=outbox_id, subscription_id=subscription_id, kind=str(kind),
            details=details, created_at=utcnow()).returning(MailIntent.id)).scalar_one())


def record_many(entries: list[dict[str, Any]]) -> None:
    """Write the intents of a group's mails in one statement on a connection of its own and
    commit them, before the group's first mail leaves. Each entry has ``outbox_id``,
    ``subscription_id``, ``kind`` and ``details``."""
    if entries:
        now = utcnow()
        with db.engine.begin() as conn:
            conn.execute(insert(MailIntent), [{**entry, "created_at": now} for entry in entries])


def done_many(outbox_ids: list[int]) -> None:
    """Drop the intents of these rows in the caller's transaction (one statement): their
    mails are in the ledger, or did not leave. (Intents a crash left were settled before.)"""
    if outbox_ids:
        db.session.execute(delete(MailIntent).where(MailIntent.outbox_id.in_(outbox_ids)))


def done(intent_id: int | None) -> None:
    """The mail is in the ledger: drop its intent, in the caller's transaction."""
    if intent_id is not None:
        db.session.execute(delete(MailIntent).where(MailIntent.id == intent_id))


def not_sent(intent_id: int | None) -> None:
    """The relay refused the mail, so it did not leave: drop the intent (best effort; one
    left behind only puts a mail that may have left into the ledger)."""
    if intent_id is None:
        return
    try:
        with db.engine.begin() as conn:
            conn.execute(delete(MailIntent).where(MailIntent.id == intent_id))
    except Exception:
        log.warning("could not drop the intent of a mail that did not leave", exc_info=True)


def left_over(outbox_ids: list[int]) -> set[int]:
    """Which of these rows have intents left by a delivery that never finished (one query
    for a claimed batch, so a delivery that finds none costs nothing more)."""
    if not outbox_ids:
        return set()
    found = set(db.session.scalars(select(MailIntent.outbox_id)
                                   .where(MailIntent.outbox_id.in_(outbox_ids))))
    db.session.rollback()
    return found


def settle(outbox_id: int) -> int:
    """Put into the ledger the mails a delivery of this row may have sent before its worker
    stopped, and commit; return how many. Cheap when there are none (one indexed read)."""
    found = db.session.scalars(select(MailIntent).where(MailIntent.outbox_id == outbox_id)
                               .order_by(MailIntent.id)).all()
    if not found:
        db.session.rollback()
        return 0
    for intent in found:
        sub = db.session.get(Subscription, intent.subscription_id, with_for_update=True,
                             populate_existing=True)
        if sub is not None:
            ledger.append(sub, EventKind(intent.kind), origin="worker",
                          details={**intent.details, "recorded": MAY_HAVE_LEFT,
                                   "intended_at": intent.created_at.isoformat()})
            log.warning("outbox %s: a mail its last delivery may have sent is put in the ledger",
                        outbox_id)
        db.session.delete(intent)
    db.session.commit()
    return len(found)
