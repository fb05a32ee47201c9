"""The signup state machine for a group of queued intake rows, set-based (issue 14, burst).

Run row by row (``intake.process`` → ``subscriptions.record_signup``), each signup cost the
worker its own transaction and about ten statements: more than its confirmation mail,
which goes in group commits. Most signups in a burst are for an address the list has
never seen; for those the state machine has one outcome (a new pending subscription, its
``signup_requested`` event, its signup record, and its confirmation mail unless the
address's daily cap is spent), so :func:`record_new` writes them for the whole group with
one statement each, in the caller's transaction:

1. one read of the subscriptions the group's addresses already have on their lists;
2. for the rows whose address has none there (and is the first of its address in the
   group): the subscriptions (``INSERT … ON CONFLICT DO NOTHING`` on the active index, so
   a concurrent writer's row is noticed, not overwritten), the events, the chain heads,
   the signup records and the confirmation mails' outbox rows, executemany each.

Every other row (an address with a subscription on the list, so a repeat signup, a
withdrawal to honour, a resend interval; a second row of one address in the group; a list
or consent text gone; a payload that does not parse; a conflict in the insert) is left to
the caller, which runs it through the unchanged row-by-row state machine, after these and
in id order, so the rules stay in one place (``subscriptions``). The same values as that
path are written (``subscriptions.new_subscription_values``, ``signup_requested_event``),
and the ledger events carry the request's time and IP.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from optin.config import Settings
from optin.consent import intake, ledger, lists, mailcap, signups, subscriptions
from optin.consent.lists import ListSnapshot, TextSnapshot
from optin.consent.subscriptions import Client, SignupRequest
from optin.extensions import db
from optin.models import OutboxItem, OutboxKind, Signup, Subscription
from optin.ops import logs, metrics

log = logging.getLogger(__name__)

_SUB, _OUTBOX, _SIGNUPS = Subscription.__table__, OutboxItem.__table__, Signup.__table__
#: The request values an intake payload carries (as ``intake.process`` reads them).
_VALUES = ("email", "first_name", "last_name", "fields", "source_url", "source_url_from",
           "locale", "consent_text_version", "list")


@dataclass
class Queued:
    """One intake row, parsed: what ``record_signup`` would be called with."""

    item_id: int
    mailing_list: ListSnapshot
    text: TextSnapshot
    email: str
    digest: str
    req: SignupRequest
    client: Client
    at: datetime
    request_id: str | None


@dataclass
class Recorded:
    """What :func:`record_new` did: the rows it processed, the confirmation mails it queued
    (outbox ids), and the rows left to the row-by-row state machine."""

    done: list[int] = field(default_factory=list)
    mails: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)


def parse(item_id: int, payload: dict[str, Any], settings: Settings,
          found: dict[tuple[str, int], Any]) -> Queued | None:
    """The row's request, or None when the row-by-row path should take it (processed
    already, its list or consent text gone, or a payload it cannot read: that path keeps
    such a row's own failure and retry rules). ``found`` caches list and text lookups."""
    try:
        if "request" not in payload:
            return None
        values = payload["request"]
        req = SignupRequest(**{k: values.get(k) for k in _VALUES if k in values})
        req.fields = req.fields or {}
        key_list, key_text = ("list", payload["list_id"]), ("text", payload["consent_text_id"])
        if key_list not in found:
            found[key_list] = lists.list_by_id(payload["list_id"])
        if key_text not in found:
            found[key_text] = lists.text_by_id(payload["consent_text_id"])
        mailing_list, text = intake.as_requested(found[key_list], payload), found[key_text]
        if mailing_list is None or text is None:
            return None
        email, digest = payload["resolved_email"], payload["email_hash"]
        texts = (email, digest, req.email, *(v for v in (req.first_name, req.last_name,
                                                         req.source_url) if v is not None))
        if not all(isinstance(v, str) for v in texts) or not isinstance(req.fields, dict):
            return None
        return Queued(item_id, mailing_list, text, email, digest, req,
                      Client(ip=payload.get("ip"), user_agent=payload.get("user_agent")),
                      datetime.fromisoformat(payload["at"]), payload.get("request_id"))
    except Exception:  # a hostile or broken payload: the row-by-row path records its failure
        return None


@functools.cache
def _insert_subscriptions(dialect: str) -> Any:
    """The group's new subscriptions, ``ON CONFLICT DO NOTHING`` on the active index (as
    ``subscriptions._insert_active``), returning which were written."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (insert(_SUB).on_conflict_do_nothing(index_elements=[_SUB.c.list_id, _SUB.c.email_hash],
                                             index_where=subscriptions.ACTIVE_PREDICATE)
            .returning(_SUB.c.id, _SUB.c.list_id, _SUB.c.email_hash))


def record_new(rows: Sequence[Queued], settings: Settings, *,
               mail_values: dict[str, Any] | None = None) -> Recorded:
    """Sign up the rows' addresses that are new to their lists, set-based, in the caller's
    transaction (the caller holds the intake rows' locks and commits); the rest is left.

    ``mail_values`` are extra column values for the confirmation mails' outbox rows (the
    worker claims them for itself, to send them in the same pass).
    """
    recorded = Recorded()
    first: dict[str, Queued] = {}
    for row in rows:
        if row.digest in first:  # one address's later rows run after it, one by one
            recorded.left.append(row.item_id)
        else:
            first[row.digest] = row
    if not first:
        return recorded
    taken = set(db.session.execute(
        select(_SUB.c.list_id, _SUB.c.email_hash).where(
            tuple_(_SUB.c.list_id, _SUB.c.email_hash).in_(
                [(r.mailing_list.id, r.digest) for r in first.values()]))).all())
    new: list[Queued] = []
    for row in first.values():
        if (row.mailing_list.id, row.digest) in taken:
            recorded.left.append(row.item_id)
        else:
            new.append(row)
    if not new:
        return recorded
    dialect = db.session.get_bind().dialect.name
    values = {row.item_id: subscriptions.new_subscription_values(
        row.mailing_list, row.text, row.email, row.digest, row.req, settings, row.at)
        for row in new}
    ids: dict[tuple[int, str], int] = {}
    # The rows that entered fields, then those that did not, whose parameters leave the
    # column out: SQL NULL, as the row-by-row path stores it (a JSON None is JSON null).
    for with_fields in (True, False):
        batch = [v if with_fields else {k: x for k, x in v.items() if k != "fields"}
                 for v in values.values() if bool(v["fields"]) == with_fields]
        if batch:
            ids.update({(list_id, digest): sub_id for sub_id, list_id, digest in
                        db.session.execute(_insert_subscriptions(dialect), batch)})
    events, heads, records, mails, written = [], [], [], [], []
    for row in new:
        sub_id = ids.get((row.mailing_list.id, row.digest))
        if sub_id is None:  # a concurrent writer made an active one: the state machine decides
            recorded.left.append(row.item_id)
            continue
        # After the insert, as the row-by-row path takes it: counted only if this commits.
        mail = mailcap.take_address_mail(row.digest, settings)
        event = subscriptions.signup_requested_event(
            sub_id, row.mailing_list, row.text, row.email, row.req, row.client, row.at,
            capped=not mail)
        events.append(event)
        heads.append(ledger.head_params(event))
        records.append(signups.row(sub_id, event["seq"], row.at, row.email, row.text,
                                   subscriptions.personal_values(row.req)))
        if mail:
            mails.append({**subscriptions.confirm_mail_values(sub_id, event["seq"], row.at),
                          **(mail_values or {})})
        written.append((row, "new" if mail else "capped"))
    ledger.insert_events(db.session, events, heads)
    if records:
        db.session.execute(_SIGNUPS.insert(), records)
    if mails:
        recorded.mails = list(db.session.scalars(
            _OUTBOX.insert().returning(_OUTBOX.c.id), mails))
    for row, outcome in written:
        recorded.done.append(row.item_id)
        metrics.signup(row.mailing_list.slug, outcome)
        with logs.context(request_id=row.request_id, outbox_id=row.item_id,
                          outbox_kind=OutboxKind.SIGNUP_INTAKE):
            log.info("signup on list %s: %s (address %s, IP %s)", row.mailing_list.slug,
                     outcome, logs.pseudonym(row.email, settings.hash_key),
                     logs.pseudonym(row.client.ip, settings.hash_key))
    return recorded


def lock_existing(pairs: set[tuple[int, str]]) -> None:
    """Lock the subscriptions these (list id, address hash) pairs already have, lowest id
    first, in one statement: the row-by-row state machine then locks them one at a time,
    already held, so the group takes its locks in the order a mail group takes them
    (``groups._preload``) and the two cannot deadlock. SQLite takes no row locks."""
    if pairs and db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(select(_SUB.c.id).where(
            tuple_(_SUB.c.list_id, _SUB.c.email_hash).in_(sorted(pairs)))
            .order_by(_SUB.c.id).with_for_update())
