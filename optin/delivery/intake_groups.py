"""Intake groups: a delivery thread's signup intake rows in one transaction (issue 14, burst).

Each signup is two outbox rows for the worker: its ``signup_intake`` row and then its
confirmation mail. The mails already go in group commits (``groups.py``); one
transaction per intake row (about ten statements) was then the larger share of a
signup's cost, and the burst drained at the intake's rate. A group takes up to
:data:`GROUP_ROWS` claimed intake rows of one thread and, in one transaction,

1. locks them (an ``UPDATE`` renewing their lease, which on SQLite also opens the
   transaction, so the savepoints below nest in it) and reads them;
2. signs up the addresses new to their lists set-based (``consent.intake_batch``),
   under a savepoint: should that fail as a whole (a database error), it is rolled back
   and every row goes the row-by-row way instead;
3. locks the subscriptions the other rows' addresses have, lowest id first (as a mail
   group does, so the two never deadlock), and runs every other row through the
   registered intake handler (the unchanged row-by-row state machine,
   ``intake.process``) under a savepoint of its own, in id order: its
   failure is rolled back to it (with the mail budget it took) and recorded for that row
   alone, by the usual retry and dead-letter rules;
4. marks the processed rows done with their payloads blanked, and commits once.

The confirmation mails the group queued are claimed by this worker in the same
statement that queues them, so the thread sends them right after the commit, as a mail
group (``groups.deliver_group``: send intents first, at most one duplicate per row after
a crash, one row's failure its own), without another claim. A crash before the commit
loses nothing (the intake rows come back with their lease and run again); after it, the
mails are queued and leased, and come back with the lease like any claimed row.

What holds as row by row: one address's rows run in order, each after the one before it
committed (the claim takes one row per serial key at a time; a second row of one address
in a group, from before the serial keys, waits for the next group, so the mail cap, which
counts what committed, sees the first); an address with a subscription on the list (a
repeat signup, a withdrawal since the request) always takes the row-by-row state machine;
an erasure waits for the group's row locks (PostgreSQL) and then erases what it created.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from optin.config import current_settings
from optin.consent import intake, intake_batch
from optin.delivery import outbox
from optin.extensions import db, savepoint
from optin.models import OutboxItem, OutboxKind, utcnow
from optin.ops import logs, metrics

log = logging.getLogger(__name__)

KIND = OutboxKind.SIGNUP_INTAKE
#: The most intake rows one group processes in its transaction.
GROUP_ROWS = 50

_ROWS = OutboxItem.__table__


def grouped(handlers: Mapping[str, outbox.Handler]) -> bool:
    """Whether intake rows go in groups: only while their handler is the intake's own (an
    app that registers another one gets it called row by row)."""
    return handlers.get(KIND) is intake.process


@dataclass
class IntakeOutcome:
    """What a group did: rows finished (processed, failed), and the mails it queued and
    claimed for this worker."""

    handled: int = 0
    mails: list[int] = field(default_factory=list)
    #: rows left for the next group (still claimed): a second row of one address
    again: list[int] = field(default_factory=list)


def deliver_intake_group(ids: list[int], worker_id: str, *, max_attempts: int,
                         horizon: timedelta, lease: timedelta) -> IntakeOutcome:
    """Process these claimed intake rows as one group (see the module's docstring); a
    database error escapes with nothing committed."""
    handlers: Mapping[str, outbox.Handler] = current_app.extensions[outbox.HANDLERS_EXTENSION]
    handler = handlers.get(KIND)
    settings = current_settings()
    now = utcnow()
    mine = (_ROWS.c.id.in_(ids), _ROWS.c.status == outbox.PENDING,
            _ROWS.c.claimed_by == worker_id)
    db.session.execute(update(_ROWS).where(*mine).values(claimed_until=now + lease))
    items = list(db.session.scalars(select(OutboxItem).where(*mine).order_by(OutboxItem.id)))
    outcome = IntakeOutcome(handled=len(ids) - len(items))
    # One address's later rows wait for the next group: its mail cap counts what committed
    # (``mailcap``), so two of its signups in one transaction would both see the budget.
    seen: set[str] = set()
    for item in list(items):
        digest = (item.payload or {}).get("email_hash")
        if isinstance(digest, str) and digest in seen:
            items.remove(item)
            outcome.again.append(item.id)
        elif isinstance(digest, str):
            seen.add(digest)
    found: dict[tuple[str, int], Any] = {}
    parsed = {item.id: intake_batch.parse(item.id, item.payload or {}, settings, found)
              for item in items}
    queued = [row for row in parsed.values() if row is not None]
    try:
        with savepoint():
            recorded = intake_batch.record_new(queued, settings, mail_values={
                "claimed_by": worker_id, "claimed_until": now + lease})
    except Exception:  # e.g. a value the database refused: every row takes the slow way
        with logs.context(outbox_id=ids[0], outbox_kind=KIND):  # the group's first row
            log.exception("the set-based intake of %s rows failed; processing them one by one",
                          len(queued))
        recorded = intake_batch.Recorded()
    fast = set(recorded.done)
    intake_batch.lock_existing({(row.mailing_list.id, row.digest) for row in queued
                                if row.item_id not in fast})
    done, failed = list(recorded.done), []
    for item in items:
        if item.id in fast:
            continue
        try:
            with logs.context(outbox_id=item.id, outbox_kind=item.kind), savepoint():
                if handler is None:
                    raise outbox.PermanentFailure(f"no handler for outbox kind {item.kind!r}")
                handler(item)
        except Exception as exc:  # the row's own failure, recorded with the group
            failed.append((item, exc))
        else:
            done.append(item.id)
    if recorded.done:
        db.session.execute(update(_ROWS).where(_ROWS.c.id.in_(recorded.done)).values(
            status=outbox.DONE, attempts=_ROWS.c.attempts + 1, last_error=None, claimed_by=None,
            claimed_until=None, finished_at=utcnow(), payload=intake.PROCESSED))
    outbox.mark_done([i for i in done if i not in fast])
    dead = []
    for item, error in failed:
        with logs.context(outbox_id=item.id, outbox_kind=item.kind):
            if outbox.apply_failure(item, error, max_attempts=max_attempts,
                                    horizon=horizon) == outbox.DEAD:
                dead.append(item.kind)
    db.session.commit()
    for kind in dead:
        metrics.dead_letter(kind)
    outcome.handled += len(items)
    outcome.mails = recorded.mails
    return outcome
