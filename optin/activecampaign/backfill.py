"""Push a whole list's consent records to ActiveCampaign in bulk imports.

For a first sync, or after ActiveCampaign was restored from elsewhere.
Subscriptions are read in id order and sent as ``POST import/bulk_import``
batches (at most 250 contacts and :data:`PAYLOAD_MAX` bytes each, the limits
ActiveCampaign documents):

* confirmed -> subscribed, with names and the fields OPTIN_AC_FIELD_MAP names
  (never if the address is suppressed);
* withdrawn after a confirmation, address still kept -> unsubscribed, address
  only (so an import or form in ActiveCampaign cannot re-add it), unless the
  same address has a newer confirmed consent on the list;
* pending, minimized, never-confirmed withdrawals -> skipped.

ActiveCampaign's bulk import never re-subscribes a contact who unsubscribed
there, so a backfill cannot resurrect a withdrawal made in ActiveCampaign
(reconcile records those here).

Resumable: after each batch the last subscription id sent is committed to
``job_state`` (``ac-backfill:<slug>``) together with the batch's ``synced``
ledger events; an interrupted run (Ctrl-C, an outage outlasting the retries)
continues after it next time. A finished run clears it. Transient failures
(5xx, 429, the bulk import's own 100-a-minute limit) are waited out and
retried; contacts ActiveCampaign rejects (``failureReasons``) are counted
as failed and the rest of the batch is sent again.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from sqlalchemy import func, insert, select

from optin.activecampaign import sync
from optin.activecampaign.client import (
    BULK_IMPORT_MAX,
    BULK_IMPORTS_PER_MINUTE,
    ActiveCampaignClient,
    AuthError,
    PermanentError,
    TransientError,
)
from optin.consent import ledger
from optin.extensions import db
from optin.models import (
    ConsentEvent,
    EventKind,
    JobState,
    MailingList,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)

log = logging.getLogger(__name__)
S = SubscriptionStatus

#: ActiveCampaign rejects bulk import bodies over 400K bytes; keep some room.
PAYLOAD_MAX = 390_000
READ_CHUNK = 500
EMPTY_BODY = len(b'{"contacts": []}')
MAX_WAIT_SECONDS = 120.0


@dataclass
class Summary:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    requests: int = 0
    resumed_after: int | None = None
    dry_run: bool = False


class ImportPace:
    """Bulk import's own limit, 100 calls in any minute, kept on this side.

    Without it the 101st call is refused ("retry in a minute") and the run
    sleeps a full minute from then on, a third longer than the limit allows. A
    sliding window of the last calls' start times says when the next may go.
    One per app (``init_app``), like a backfill run; the shared 5/s throttle
    paces each call.
    """

    def __init__(self, per_minute: int = BULK_IMPORTS_PER_MINUTE, margin: float = 0.5) -> None:
        self.per_minute, self.margin = per_minute, margin
        self.starts: deque[float] = deque(maxlen=per_minute)

    def wait(self, sleep: Callable[[float], None]) -> None:
        if len(self.starts) == self.per_minute:
            delay = self.starts[0] + 60.0 + self.margin - time.monotonic()
            if delay > 0:
                sleep(delay)
        self.starts.append(time.monotonic())


PACE_EXTENSION = "optin.ac_import_pace"


def init_app(app: Flask) -> None:
    """Give the app its own bulk-import pace: two apps in one process never share a count."""
    app.extensions[PACE_EXTENSION] = ImportPace()


class BackfillInterrupted(RuntimeError):
    """ActiveCampaign kept failing; the cursor keeps the place, so run again to resume."""

    def __init__(self, message: str, summary: Summary) -> None:
        super().__init__(message)
        self.summary = summary


def _cursor_key(mailing_list: MailingList) -> str:
    return f"ac-backfill:{mailing_list.slug}"[:100]


def cursor(mailing_list: MailingList) -> int | None:
    """The last subscription id an interrupted backfill sent, or None."""
    state = db.session.get(JobState, _cursor_key(mailing_list))
    return None if state is None else state.value.get("last_id")


def _save_cursor(mailing_list: MailingList, last_id: int | None) -> None:
    key = _cursor_key(mailing_list)
    state = db.session.get(JobState, key, with_for_update=True)
    if last_id is None:
        if state is not None:
            db.session.delete(state)
        return
    if state is None:
        state = JobState(name=key, value={})
        db.session.add(state)
    state.value = {"last_id": last_id, "at": utcnow().isoformat()}


def remaining(mailing_list: MailingList, after: int | None) -> int:
    """How many subscriptions a run starting after ``after`` will look at (for a progress bar)."""
    return db.session.scalar(
        select(func.count()).select_from(Subscription)
        .where(Subscription.list_id == mailing_list.id, Subscription.id > (after or 0))
    ) or 0


def _entry(sub: Any, ac_list: int) -> dict[str, Any]:
    if sub.status == S.CONFIRMED:
        entry: dict[str, Any] = {"email": sub.email, "subscribe": [{"listid": ac_list}]}
        if sub.first_name:
            entry["first_name"] = sub.first_name
        if sub.last_name:
            entry["last_name"] = sub.last_name
        fields = sync.field_values(sub)
        if fields:
            entry["fields"] = [{"id": int(k), "value": v} for k, v in fields.items()]
        return entry
    return {"email": sub.email, "unsubscribe": [{"listid": ac_list}]}


_COLUMNS = (Subscription.id, Subscription.status, Subscription.email, Subscription.email_hash,
            Subscription.first_name, Subscription.last_name, Subscription.fields,
            Subscription.confirmed_at)


def _candidates(mailing_list: MailingList, after: int) -> Iterator[tuple[Any, bool]]:
    """(subscription row, send it?) in id order, read in chunks as plain rows (the commit
    after each batch does not expire them)."""
    last_id = after
    while True:
        rows = db.session.execute(
            select(*_COLUMNS)
            .where(Subscription.list_id == mailing_list.id, Subscription.id > last_id)
            .order_by(Subscription.id).limit(READ_CHUNK)
        ).all()
        if not rows:
            return
        withdrawn = {r.email_hash for r in rows if r.status == S.UNSUBSCRIBED}
        reconsented = set(db.session.scalars(
            select(Subscription.email_hash).where(
                Subscription.list_id == mailing_list.id, Subscription.status == S.CONFIRMED,
                Subscription.email_hash.in_(withdrawn))
        )) if withdrawn else set()
        suppressed = set(db.session.scalars(
            select(Suppression.email_hash).where(
                Suppression.list_id == mailing_list.id,
                Suppression.email_hash.in_({r.email_hash for r in rows}))
        ))
        for sub in rows:
            if sub.status == S.CONFIRMED:
                send = bool(sub.email) and sub.email_hash not in suppressed
            elif sub.status == S.UNSUBSCRIBED:
                send = (bool(sub.email) and sub.confirmed_at is not None
                        and sub.email_hash not in reconsented)
            else:
                send = False
            yield sub, send
        last_id = rows[-1].id


def _size(entry: dict[str, Any]) -> int:
    """Bytes the entry adds to the request body (as ``requests`` encodes JSON)."""
    return len(json.dumps(entry).encode()) + 2  # and its ", "


def backfill(
    mailing_list: MailingList,
    *,
    batch: int = BULK_IMPORT_MAX,
    restart: bool = False,
    retries: int = 5,
    progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Summary:
    """Send the list's consent records in bulk imports; see the module doc for what and how."""
    if not 1 <= batch <= BULK_IMPORT_MAX:
        raise ValueError(f"batch must be between 1 and {BULK_IMPORT_MAX}")
    if mailing_list.ac_list_id is None:
        raise ValueError(f"list {mailing_list.slug} has no ActiveCampaign list id")
    ac_list = mailing_list.ac_list_id
    ac = sync.client()
    start = None if restart else cursor(mailing_list)
    summary = Summary(resumed_after=start, dry_run=ac is None)
    pending: list[tuple[int, dict[str, Any]]] = []  # (subscription id, entry)
    emails: set[str] = set()  # an address once per import
    size = EMPTY_BODY

    for sub, send in _candidates(mailing_list, start or 0):
        key = (sub.email or "").casefold()
        if not send or key in emails:
            summary.skipped += 1
        else:
            entry = _entry(sub, ac_list)
            grown = _size(entry)
            if pending and (len(pending) >= batch or size + grown > PAYLOAD_MAX):
                _send(ac, mailing_list, ac_list, pending, summary, retries, sleep)
                pending, emails, size = [], set(), EMPTY_BODY
            pending.append((sub.id, entry))
            emails.add(key)
            size += grown
        if progress is not None:
            progress(1)
    if pending:
        _send(ac, mailing_list, ac_list, pending, summary, retries, sleep)
    _save_cursor(mailing_list, None)  # finished: the next run starts from the beginning
    db.session.commit()
    return summary


def _send(ac: ActiveCampaignClient | None, mailing_list: MailingList, ac_list: int,
          pending: list[tuple[int, dict[str, Any]]], summary: Summary, retries: int,
          sleep: Callable[[float], None]) -> None:
    """One batch: the import, its ledger events and the cursor, committed together."""
    ids = [i for i, _ in pending]
    entries = [e for _, e in pending]
    if ac is None:
        log.info("ActiveCampaign dry-run: would bulk-import %s contacts to list %s",
                 len(entries), ac_list)
        _record(ids, entries, ac_list, EventKind.SYNC_SKIPPED, {"reason": "dry-run (OPTIN_AC_URL unset)"})
        summary.skipped += len(entries)
    else:
        batch_id, rejected = _import(ac, entries, summary, retries, sleep)
        sent = [n for n in range(len(entries)) if n not in rejected]
        summary.failed += len(rejected)
        summary.sent += len(sent)
        if sent:
            _record([ids[n] for n in sent], [entries[n] for n in sent], ac_list, EventKind.SYNCED,
                    {"status": "queued", "batch_id": batch_id, "via": "bulk_import"})
    _save_cursor(mailing_list, ids[-1])
    db.session.commit()


def _import(ac: ActiveCampaignClient, entries: list[dict[str, Any]], summary: Summary,
            retries: int, sleep: Callable[[float], None]) -> tuple[str | None, set[int]]:
    """POST the batch until it is queued; return its batch id and the positions rejected."""
    pace: ImportPace = current_app.extensions[PACE_EXTENSION]
    positions = list(range(len(entries)))  # what is still being sent
    rejected: set[int] = set()
    attempt = 0
    while positions:
        try:
            pace.wait(sleep)
            summary.requests += 1
            return ac.bulk_import([entries[p] for p in positions])["batchId"], rejected
        except TransientError as exc:
            attempt += 1
            if attempt > retries:
                db.session.rollback()
                raise BackfillInterrupted(str(exc), summary) from None
            wait = exc.retry_after if exc.retry_after is not None else 2.0 ** attempt
            log.warning("bulk import failed (%s); retry %s of %s in %.0f s",
                        exc, attempt, retries, wait)
            sleep(min(wait, MAX_WAIT_SECONDS) * random.uniform(1.0, 1.1))
        except AuthError as exc:
            db.session.rollback()
            raise BackfillInterrupted(f"{exc} (check OPTIN_AC_API_KEY)", summary) from None
        except PermanentError as exc:  # failureReasons name the contacts by position
            bad = {r["contact"] for r in exc.errors if isinstance(r, dict)
                   and isinstance(r.get("contact"), int) and 0 <= r["contact"] < len(positions)}
            log.warning("bulk import rejected %s: %s", f"{len(bad)} contacts" if bad else "the batch",
                        exc)
            if not bad:
                return None, rejected | set(positions)
            rejected |= {positions[i] for i in bad}
            positions = [p for i, p in enumerate(positions) if i not in bad]
    return None, rejected


def _record(ids: list[int], entries: list[dict[str, Any]], ac_list: int, kind: EventKind,
            details: dict[str, Any]) -> None:
    """One ledger event per subscription in the batch, each under its row lock.

    Written as two executemany statements (events, chain heads) rather than 250
    ORM objects: the ORM's flush took longer than the import request itself.
    """
    actions = dict(zip(ids, ("subscribe" if "subscribe" in e else "unsubscribe" for e in entries),
                       strict=True))
    table = Subscription.__table__
    heads = db.session.execute(
        select(table.c.id, table.c.ledger_seq, table.c.ledger_head)
        .where(table.c.id.in_(ids)).order_by(table.c.id).with_for_update()
    ).all()
    now = utcnow()
    events = [ledger.event_row(sub_id, seq or 0, head, kind, origin="backfill", at=now,
                               details={"action": actions[sub_id], "ac_list_id": ac_list,
                                        **details})
              for sub_id, seq, head in heads]
    if not events:
        return
    db.session.execute(insert(ConsentEvent.__table__), events)
    db.session.execute(ledger.MOVE_HEAD, [ledger.head_params(e) for e in events])
