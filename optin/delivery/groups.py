"""Group commits: a delivery thread's mails in one transaction (issue 14, throughput).

One transaction per mail cost 31 ms of CPU and 9.2 statements a mail. A group takes up
to :data:`GROUP_ROWS` claimed mail rows of one thread and

1. locks them and their subscriptions (reading the signups too) in three statements, and
   runs each row's handler under a savepoint. Handlers
   are the usual state-checking ones (``notifications``): they lock the subscription and
   look at it as it is now; instead of sending, ``notifications._send`` hands the built
   mail to the group (:data:`COLLECTING`). A handler that fails is rolled back to its
   savepoint and fails alone;
2. records the send intents of all the group's mails in one statement, committed on a
   connection of their own, before the first mail leaves (``intents.record_many``);
3. sends them on the thread's kept-open SMTP connection, for at most
   :data:`GROUP_SECONDS` from the first send: a mail refused by the relay is that row's
   failure (retry or dead letter by its own rules); a relay that is down pauses that row,
   and the rest wait for its breaker's verdict (each failed connection counts, as it did
   row by row); rows the window left unsent go to the next group, whose handlers look at
   their subscriptions again;
4. writes the ledger events and chain heads, the confirmation mails' copies, the done
   marks and the intents' removal with one statement each (executemany), and the failed
   rows' own records, and commits once.

What the three conditions of group commits rest on:
- a failure in one row never fails or delays another: savepoints around the handlers,
  per-row handling of the relay's answers, the group commits what went through;
- after a crash at most one duplicate per row leaves, and only inside the window: every
  row of the group has its intent, so the next delivery of each puts its Message-ID in
  the ledger (``intents.settle``) and sends it once more; at most :data:`GROUP_ROWS` rows
  or :data:`GROUP_SECONDS` of sending are ever uncommitted;
- the proof names every Message-ID that may have left: the intents are committed before
  the first send, the ones of mails that never left only add a "may have left" entry.

An unsubscribe still wins: on PostgreSQL the group holds the subscriptions' row locks
from the handler's check to its commit, so a withdrawal either came first (the handler
sends nothing) or, after waiting ``OPTIN_WITHDRAWAL_LOCK_WAIT_SECONDS`` for the group, is
queued (``consent.withdrawals``): the group reads its subscriptions' queued withdrawals
with its preload, and once more before a send when it has been out for half that wait (a
hung relay), and sends nothing but a goodbye for them. On SQLite, whose reads take no row
locks, each subscription's status is read again right before its mail leaves, a row whose
subscription changed sends nothing (and runs again), and the record re-reads the chain
heads after taking the write lock, so a withdrawal committed while the mails were out is
followed on the chain, and a copy of a mail to it keeps no names.

A group whose COMMIT fails records each sent mail in a transaction of its own and counts
an attempt on every row it could not record (:data:`COMMIT_FAILED`); those rows run alone
next time, so a row that breaks every commit reaches its dead letter by the usual rule and
its neighbours go through without it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import Message
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import set_committed_value

from optin.config import current_settings
from optin.consent import ledger, mailcopies, withdrawals
from optin.delivery import intents, outbox
from optin.delivery.mailer import Backend, RelayUnavailable, Unsendable
from optin.extensions import db
from optin.models import EventKind, OutboxItem, OutboxKind, Signup, Subscription, utcnow
from optin.ops import logs, metrics

log = logging.getLogger(__name__)

#: The most rows one group sends before it commits, and the longest it sends (seconds from
#: its first mail): the window in which a crash can leave one duplicate per row.
GROUP_ROWS = 50
GROUP_SECONDS = 0.25
#: The destination whose rows go in groups: the mail relay (``notifications`` sends them).
MAIL_DESTINATION = "smtp"
#: Tries to record a group's sent mails when its commit failed (a database blip).
RECORD_ATTEMPTS = 4
#: The one mail a queued withdrawal still lets leave (the list's rules decide whether it is
#: queued at all, when the withdrawal is applied).
AFTER_WITHDRAWAL = frozenset({OutboxKind.GOODBYE_MAIL})
#: The error a group's rows get when the group's COMMIT failed: they then run alone, so a
#: row that breaks every commit counts its own attempts to its dead letter, and its
#: neighbours go through without it.
COMMIT_FAILED = "the delivery group's commit failed"


@dataclass
class Mail:
    """A built mail a handler hands to its group instead of sending it."""

    template: str
    subscription_id: int
    kind: EventKind
    details: dict[str, Any]
    message: Message
    copy: mailcopies.Copy | None
    #: the subscription's status the handler decided on (SQLite's re-check compares it)
    status: str
    #: the subscription, locked by the handler: held here so the session's identity map
    #: (weakly referencing) keeps it and its chain head for the group's ledger events
    subscription: Subscription


#: Where ``notifications._send`` puts the mail of the row being prepared (None: send now).
COLLECTING: ContextVar[list[Mail] | None] = ContextVar("optin_group_collecting", default=None)


@dataclass
class Preloaded:
    """The group's subscriptions (locked, with list and consent text) and their signups,
    read in two statements for the whole group: the handlers look them up here instead of
    a query each (``notifications._subscription``, ``_signup``)."""

    subscriptions: dict[int, Subscription]
    signups: dict[int, list[Signup]]
    #: subscriptions with a withdrawal queued (``consent.withdrawals``): mailed nothing
    withdrawing: set[int] = field(default_factory=set)

    def signup(self, subscription_id: int, seq: int | None) -> Signup | None:
        """As ``signups.find``: the signup ``seq``; without one, the subscription's first."""
        found = self.signups.get(subscription_id, [])
        if seq is None:
            return found[0] if found else None
        return next((s for s in found if s.seq == seq), None)


#: The current group's :class:`Preloaded` (None outside a group).
PRELOADED: ContextVar[Preloaded | None] = ContextVar("optin_group_preloaded", default=None)


def _preload(items: list[OutboxItem]) -> Preloaded:
    """Lock the group's subscriptions in id order (as one row at a time would, lowest
    first) and read their signups."""
    ids = sorted({item.subscription_id for item in items if item.subscription_id is not None})
    if not ids:
        return Preloaded({}, {})
    subs = db.session.scalars(
        select(Subscription).where(Subscription.id.in_(ids))
        .options(joinedload(Subscription.mailing_list), joinedload(Subscription.consent_text))
        .order_by(Subscription.id).with_for_update(of=Subscription)).unique().all()
    found: dict[int, list[Signup]] = {}
    for signup in db.session.scalars(
            select(Signup).where(Signup.subscription_id.in_(ids))
            .options(joinedload(Signup.consent_text))
            .order_by(Signup.subscription_id, Signup.seq)).unique():
        found.setdefault(signup.subscription_id, []).append(signup)
    return Preloaded({sub.id: sub for sub in subs}, found, withdrawals.pending(ids))


@dataclass
class Pace:
    """How long a send takes on this thread's connection (moving average), so a group
    holds about as many rows as its window can send: 50 on a fast relay, 5 at 50 ms."""

    seconds: float = 0.002

    def rows(self) -> int:
        return max(1, min(GROUP_ROWS, int(GROUP_SECONDS / max(self.seconds, 1e-4))))

    def took(self, seconds: float) -> None:
        self.seconds = 0.8 * self.seconds + 0.2 * seconds


@dataclass
class Outcome:
    """What a group did: rows finished (done, failed, paused), and rows to run again."""

    handled: int = 0
    again: list[int] = field(default_factory=list)
    reached: bool = False
    down: outbox.DestinationDown | None = None


class _Changed(Exception):
    """SQLite's re-check found the subscription changed: the row runs again, uncounted."""


@dataclass
class _Row:
    """One row of a group: its mail once its handler built one, or its own failure."""

    item: OutboxItem
    enqueued: datetime
    mail: Mail | None = None
    failure: Exception | None = None


def deliver_group(ids: list[int], worker_id: str, *, max_attempts: int, horizon: timedelta,
                  pace: Pace, destination: str) -> Outcome:
    """Deliver these claimed mail rows as one group (see the module's docstring); a database
    error escapes after the mails that left were recorded, or their intents kept."""
    handlers: Mapping[str, outbox.Handler] = current_app.extensions[outbox.HANDLERS_EXTENSION]
    items = db.session.scalars(
        select(OutboxItem).where(OutboxItem.id.in_(ids), OutboxItem.status == outbox.PENDING,
                                 OutboxItem.claimed_by == worker_id)
        .order_by(OutboxItem.id).with_for_update()).all()
    order = {item_id: i for i, item_id in enumerate(ids)}
    rows = [_Row(item, item.created_at) for item in sorted(items, key=lambda it: order[it.id])]
    suspect = [row.item.id for row in rows if COMMIT_FAILED in (row.item.last_error or "")]
    if suspect and len(rows) > 1:  # a group's commit failed with it: alone this time
        db.session.rollback()
        outcome = deliver_group(suspect[:1], worker_id, max_attempts=max_attempts,
                                horizon=horizon, pace=pace, destination=destination)
        outcome.again += [i for i in ids if i != suspect[0]]
        return outcome
    skipped = len(ids) - len(rows)
    postgres = db.session.get_bind().dialect.name == "postgresql"
    loaded = _preload([row.item for row in rows])
    checked = time.monotonic()
    preloaded = PRELOADED.set(loaded)
    try:
        for row in rows:
            if row.item.subscription_id in loaded.withdrawing and \
                    row.item.kind not in AFTER_WITHDRAWAL:
                continue  # withdrawn, queued: done, and nothing sent
            _prepare(row, handlers.get(row.item.kind), savepoint=postgres)
    finally:
        PRELOADED.reset(preloaded)
    mails = [row for row in rows if row.mail is not None]
    intents.record_many([{"outbox_id": row.item.id, "subscription_id": row.mail.subscription_id,
                          "kind": str(row.mail.kind), "details": row.mail.details}
                         for row in mails if row.mail is not None])
    outcome = Outcome(handled=skipped)
    sent = _send_all(mails, pace, outcome, destination, recheck=not postgres, checked=checked)
    try:
        _record(rows, sent, outcome, max_attempts=max_attempts, horizon=horizon,
                reread=not postgres)
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        recorded = _record_after_failure(sent)
        _count_failed_commit([row.item.id for row in rows if row.item.id not in recorded], exc,
                             max_attempts=max_attempts, horizon=horizon)
        raise
    for row in sent:
        mail = row.mail
        assert mail is not None
        metrics.mail_delivered(mail.template)
        metrics.mail_time_to_send(mail.template,
                                  (utcnow() - row.enqueued).total_seconds())
    return outcome


def _prepare(row: _Row, handler: outbox.Handler | None, *, savepoint: bool) -> None:
    """Run the row's handler with the mail collected, not sent; a failure is the row's."""
    collected: list[Mail] = []
    token = COLLECTING.set(collected)
    current = intents.CURRENT_ROW.set(row.item.id)
    nested = db.session.begin_nested() if savepoint else None
    try:
        with logs.context(outbox_id=row.item.id, outbox_kind=row.item.kind):
            if handler is None:
                raise outbox.PermanentFailure(f"no handler for outbox kind {row.item.kind!r}")
            handler(row.item)
        if nested is not None:
            nested.commit()
    except Exception as exc:  # every failure is the row's own, recorded with the group
        if nested is not None:
            nested.rollback()
        else:  # SQLite: the mail handlers read only before they send; nothing is lost
            db.session.rollback()
        row.failure = exc
        return
    finally:
        COLLECTING.reset(token)
        intents.CURRENT_ROW.reset(current)
    if len(collected) > 1:  # one mail a row is what the ledger and the intents assume
        raise RuntimeError(f"outbox kind {row.item.kind!r} built {len(collected)} mails")
    row.mail = collected[0] if collected else None


def _unchanged(row: _Row) -> bool:
    """SQLite: is the subscription still as its handler saw it? Read right before the mail
    leaves (one indexed read), for SQLite's reads take no row locks: a withdrawal or an
    erasure committed since the handler looked sends nothing (the row runs again)."""
    mail = row.mail
    assert mail is not None
    now = db.session.execute(select(Subscription.status, Subscription.erased_at)
                             .where(Subscription.id == mail.subscription_id)).first()
    # An erasure of a withdrawn subscription leaves its status: it counts as a change too
    # (no mail, not even the goodbye, goes to an address erased).
    if now is not None and now.status == mail.status and now.erased_at is None:
        return True
    row.mail, row.failure = None, _Changed()
    return False


def _send_all(rows: list[_Row], pace: Pace, outcome: Outcome, destination: str, *,
              recheck: bool, checked: float) -> list[_Row]:
    """Send the group's mails in order within its window; return the ones the relay took.

    ``checked``: when the group last read its queued withdrawals. A withdrawal is queued
    only after waiting the lock wait for a row the group holds, so a group out for less
    than that (every group on a relay that answers) never reads them again; one held up
    longer (a hung relay) reads them before its next send, once per half lock wait."""
    backend: Backend = current_app.extensions["optin.mail_backend"]
    sent: list[_Row] = []
    started: float | None = None
    every = current_settings().withdrawal_lock_wait_seconds / 2
    cancelled: set[int] = set()
    for i, row in enumerate(rows):
        now = time.monotonic()
        if now - checked >= every:
            cancelled |= _withdrawing(rows[i:])
            checked = now
        if row.item.id in cancelled:
            row.mail = None  # withdrawn while the group was out: done, nothing sent
            continue
        mail = row.mail
        assert mail is not None
        if started is not None and now - started >= GROUP_SECONDS:
            for left in rows[i:]:  # the window is over: the next group runs them again
                left.mail = None
                outcome.again.append(left.item.id)
            break
        started = started if started is not None else now
        if recheck and not _unchanged(row):
            continue
        try:
            backend.send(mail.message)
        except Unsendable as exc:
            metrics.mail_failed(mail.template)
            row.mail, row.failure = None, outbox.PermanentFailure(str(exc))
        except RelayUnavailable as exc:  # the relay, not these mails: they wait for it
            metrics.mail_failed(mail.template)
            down = outbox.DestinationDown(destination, f"mail not sent: {exc}")
            outcome.down = down
            row.mail, row.failure = None, down
            for left in rows[i + 1:]:  # tried again once the breaker has counted this one
                left.mail = None
                outcome.again.append(left.item.id)
            break
        except OSError as exc:  # refused for this mail (4xx/5xx to RCPT or DATA)
            metrics.mail_failed(mail.template)
            row.mail, row.failure = None, outbox.RetryLater(f"mail not sent: {_smtp_error(exc)}")
        except Exception as exc:  # anything else (a bug with this message) is the row's too:
            # escaping, it left the mails sent before it unrecorded, to be sent again by
            # every next delivery, and this row's attempts uncounted (never a dead letter)
            metrics.mail_failed(mail.template)
            log.exception("outbox %s: sending its mail failed", row.item.id)  # logs: scrubbed
            row.mail, row.failure = None, outbox.RetryLater(f"mail not sent: {_smtp_error(exc)}")
        else:
            sent.append(row)
            outcome.reached = True
        finally:
            pace.took(time.monotonic() - now)
    return sent


def _withdrawing(rows: list[_Row]) -> set[int]:
    """The rows (outbox ids) whose subscription has a withdrawal queued now and whose mail
    may not follow it (one statement)."""
    subs = {row.mail.subscription_id for row in rows if row.mail is not None}
    late = withdrawals.pending(subs)
    return {row.item.id for row in rows if row.mail is not None
            and row.mail.subscription_id in late and row.item.kind not in AFTER_WITHDRAWAL}


def _smtp_error(exc: Exception) -> str:
    """The relay's refusal with addresses and secrets replaced by their pseudonyms (as
    ``notifications.smtp_error``)."""
    return logs.scrubber(current_settings())(f"{type(exc).__name__}: {exc}")


def _record(rows: list[_Row], sent: list[_Row], outcome: Outcome, *, max_attempts: int,
            horizon: timedelta, reread: bool = False) -> None:
    """Everything the group did, in its transaction: ledger events and chain heads, copies,
    done marks, intents dropped (one statement each), and each failed row's own record.

    ``reread`` (SQLite, whose reads took no lock): the done marks go first, which takes the
    database's write lock, and the chain heads are read again under it, so a withdrawal
    committed while the mails were out is followed, not collided with (its seq), and a
    copy of a mail to a subscription withdrawn or erased meanwhile keeps no names."""
    again = set(outcome.again)
    failed = [row for row in rows if row.failure is not None]
    outbox.mark_done([row.item.id for row in rows
                      if row.failure is None and row.item.id not in again])
    intents.done_many([row.item.id for row in rows])
    changed = _reread_heads(sent) if reread else set()
    events, heads, copies = [], [], []
    for row in sent:
        mail = row.mail
        assert mail is not None
        sub = mail.subscription  # locked by its handler in this transaction
        event = ledger.event_row(sub.id, sub.ledger_seq or 0, sub.ledger_head, mail.kind,
                                 origin="worker", details=mail.details)
        set_committed_value(sub, "ledger_seq", event["seq"])
        set_committed_value(sub, "ledger_head", event["chain_hash"])
        events.append(event)
        heads.append(ledger.head_params(event))
        if mail.copy is not None:
            copies.append((mail.copy, sub.id, mail.details, event["at"]))
    ledger.insert_events(db.session, events, heads)
    mailcopies.keep_many([
        {"copy": copy, "subscription_id": sub_id, "message_id": details["message_id"],
         "template": details["template"], "sent_at": at} for copy, sub_id, details, at in copies])
    if changed:
        mailcopies.forget_names(sorted(changed))
    dead: list[str] = []
    for row in failed:
        exc = row.failure
        if isinstance(exc, _Changed):
            outcome.again.append(row.item.id)  # SQLite's re-check: run it again at once
            continue
        with logs.context(outbox_id=row.item.id, outbox_kind=row.item.kind):
            if isinstance(exc, outbox.DestinationDown):
                result = outbox.apply_paused(row.item, exc, horizon=horizon)
            else:
                assert exc is not None
                result = outbox.apply_failure(row.item, exc, max_attempts=max_attempts,
                                              horizon=horizon)
        if result == outbox.DEAD:
            dead.append(row.item.kind)
    db.session.flush()
    outcome.handled += len(rows) - len(outcome.again)
    for kind in dead:
        metrics.dead_letter(kind)


def _reread_heads(sent: list[_Row]) -> set[int]:
    """The sent mails' subscriptions' chain heads as they are now (one statement), put on
    the subscriptions; the ids of those withdrawn or erased since their handler looked."""
    by_id = {row.mail.subscription_id: row.mail for row in sent if row.mail is not None}
    if not by_id:
        return set()
    changed: set[int] = set()
    for now in db.session.execute(
            select(Subscription.id, Subscription.ledger_seq, Subscription.ledger_head,
                   Subscription.status, Subscription.erased_at)
            .where(Subscription.id.in_(list(by_id)))):
        mail = by_id[now.id]
        set_committed_value(mail.subscription, "ledger_seq", now.ledger_seq)
        set_committed_value(mail.subscription, "ledger_head", now.ledger_head)
        if now.status != mail.status or now.erased_at is not None:
            changed.add(now.id)
    return changed


def _record_after_failure(sent: list[_Row]) -> set[int]:
    """The group's commit failed after its mails left: record each (ledger, done mark,
    intent dropped) in a transaction of its own, tried a few times over a blip, so a row
    that breaks its commit breaks no other's; what even that cannot write stays in the
    intents, which the rows' next delivery puts in the ledger, so no mail that left is
    missing from the proof. Returns the outbox ids recorded."""
    recorded: set[int] = set()
    for row in sent:
        mail = row.mail
        assert mail is not None
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                _record_one_after_failure(row.item.id, mail)
                db.session.commit()
                recorded.add(row.item.id)
                break
            except Exception:
                db.session.rollback()
                if attempt == RECORD_ATTEMPTS:
                    log.exception("could not record a mail a failed group already sent")
                    break
                time.sleep(0.1 * 2 ** attempt)
    return recorded


def _record_one_after_failure(item_id: int, mail: Mail) -> None:
    sub = db.session.get(Subscription, mail.subscription_id, with_for_update=True,
                         populate_existing=True)
    if sub is None:
        log.error("mail %s left for a subscription that is gone", mail.details["message_id"])
    else:
        event = ledger.append(sub, mail.kind, origin="worker", details={
            **mail.details, "recorded": "after its delivery's transaction failed"})
        if mail.copy is not None:
            mailcopies.keep(mail.copy, subscription_id=sub.id,
                            message_id=mail.details["message_id"],
                            template=mail.details["template"], sent_at=event.at)
            if sub.status != mail.status or sub.erased_at is not None:
                db.session.flush()
                mailcopies.forget_names([sub.id])  # withdrawn or erased since it left
    outbox.mark_done([item_id])
    intents.done_many([item_id])


def _count_failed_commit(ids: list[int], exc: Exception, *, max_attempts: int,
                         horizon: timedelta) -> None:
    """Count an attempt on each row of a group whose COMMIT failed (each in a transaction of
    its own): a row that breaks every commit then reaches its dead letter like any failing
    row, instead of going round for ever; :data:`COMMIT_FAILED` makes each run alone next
    time (``deliver_group``), so its neighbours go through without it. A database that is
    down records nothing here: the leases bring the rows back, attempts untouched."""
    failure = outbox.RetryLater(f"{COMMIT_FAILED}: {type(exc).__name__}")
    for item_id in ids:
        try:
            item = db.session.get(OutboxItem, item_id, with_for_update=True,
                                  populate_existing=True)
            if item is None or item.status != outbox.PENDING:
                db.session.rollback()
                continue
            kind = item.kind
            result = outbox.apply_failure(item, failure, max_attempts=max_attempts,
                                          horizon=horizon)
            db.session.commit()
            if result == outbox.DEAD:
                metrics.dead_letter(kind)
        except Exception:
            db.session.rollback()
            log.warning("could not count the failed group's attempts; the leases bring "
                        "its rows back")
            return
