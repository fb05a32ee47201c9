"""The consent ledger: append events, chain them, verify the chain.

Each subscription has its own hash chain, so concurrent signups never wait for
one another (a global chain would serialize every write). An event's
``content_hash`` covers its content; its ``chain_hash`` covers the previous
chain hash, its sequence number and the content hash, not the content itself.
Minimization may therefore blank the content and the chain still verifies.
The subscription row keeps the chain's head (``ledger_seq``, ``ledger_head``),
written in the same transaction, so a deleted last event is noticed too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, object_session, scoped_session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from optin.config import current_settings
from optin.models import (
    ConsentEvent,
    EventKind,
    Subscription,
    storable_json,
    storable_text,
    utcnow,
)
from optin.ops.pseudonyms import identity, keyed_hash

GENESIS = "0" * 64

#: Event details that survive minimization (``privacy.retention`` strips the rest): kinds
#: of things, versions and hashes, never a value a person typed or that names them. Here,
#: so that verification can hold a minimized event to it.
KEPT_DETAIL_KEYS = (
    "action", "actor", "consent_text_sha256", "consent_text_version", "copy", "document_id",
    "html_sha256", "locale", "message_id", "privacy_policy_url", "purpose", "rule", "run",
    "signup_seq", "template", "template_sha256", "text_sha256", "was",
)
#: Kept by minimizations before "reason" went (it holds what a contact typed as their
#: reason to leave, passed on by ActiveCampaign) and before "fields_entered" went (the
#: names of the custom fields, which the visitor's request chose: any text, an address
#: too): a minimized event may still hold them.
_ONCE_KEPT = frozenset(KEPT_DETAIL_KEYS) | {"reason", "fields_entered"}


def canonical_content(event: ConsentEvent) -> str:
    """The event's content as canonical JSON: what ``content_hash`` hashes.

    Public so set-based SQL that writes events (the retention job) can build
    the same text and be checked against this one definition.
    """
    content = {
        "subscription_id": event.subscription_id,
        "seq": event.seq,
        "kind": event.kind,
        "at": event.at.isoformat(timespec="microseconds"),
        "ip": event.ip,
        "user_agent": event.user_agent,
        "consent_text_id": event.consent_text_id,
        "origin": event.origin,
        "details": event.details or {},
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


#: canonical_content's JSON form, as one encoder (json.dumps builds one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_compact = _CANONICAL.encode


def _scalar(value: str | int | None) -> str:
    """A top-level value of an event's content in canonical JSON (as _compact writes it)."""
    if value is None:
        return "null"
    return encode_basestring(value) if isinstance(value, str) else _compact(value)


def _content_text(row: dict[str, Any], details_text: str) -> str:
    """:func:`canonical_content` of an event row whose details are already serialized
    (as :func:`_compact` does): the same text, composed so the details, the bulk of an
    event, are serialized once (the keys below are in sorted order, as sort_keys puts
    them; tests/consent/test_ledger.py holds the two to the same text)."""
    return (f'{{"at":{_scalar(row["at"].isoformat(timespec="microseconds"))},'
            f'"consent_text_id":{_scalar(row["consent_text_id"])},'
            f'"details":{details_text},"ip":{_scalar(row["ip"])},'
            f'"kind":{_scalar(row["kind"])},"origin":{_scalar(row["origin"])},'
            f'"seq":{_scalar(row["seq"])},"subscription_id":{_scalar(row["subscription_id"])},'
            f'"user_agent":{_scalar(row["user_agent"])}}}')


#: What :data:`optin.models.storable_text` drops, as it looks in JSON written with
#: ensure_ascii=False: control characters escaped, DEL and lone surrogates as they are.
#: A literal backslash before ``b``/``f``/``u00…`` matches too: that only costs the slow path.
_UNSTORABLE_IN_JSON = re.compile(r"\\u00(?:0[0-8bcef]|1[0-9a-f])|\\[bf]|[\x7f\ud800-\udfff]")


def storable_details(details: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``details`` as :func:`event_row` stores them and their canonical JSON text.

    For writers of many events whose details hold only string keys (the import): the
    details are serialized once and walked by ``storable_json`` only if that text shows
    something a database cannot hold. The text is what a COPY stores as the column.
    """
    text = _compact(details)
    if _UNSTORABLE_IN_JSON.search(text) is not None:
        details = storable_json(details)
        text = _compact(details)
    return details, text


def content_hash(event: ConsentEvent) -> str:
    """SHA-256 over the event's content in a canonical JSON form."""
    return hashlib.sha256(canonical_content(event).encode()).hexdigest()


def chain_hash(previous: str | None, seq: int, content: str) -> str:
    return hashlib.sha256(f"{previous or GENESIS}|{seq}|{content}".encode()).hexdigest()


def append(
    subscription: Subscription,
    kind: EventKind,
    *,
    origin: str,
    at: datetime | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    consent_text_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> ConsentEvent:
    """Add an event to the subscription's chain, in the caller's transaction.

    The caller must hold the subscription's row lock (the state machine does),
    so two appends to one chain cannot interleave.
    """
    if subscription.id is None:
        raise RuntimeError("flush the subscription before appending to its ledger")
    row = event_row(subscription.id, subscription.ledger_seq or 0, subscription.ledger_head,
                    kind, origin=origin, at=at, ip=ip, user_agent=user_agent,
                    consent_text_id=consent_text_id, details=details)
    event = ConsentEvent(**row)
    subscription.ledger_seq = event.seq
    subscription.ledger_head = event.chain_hash
    # Added to the session, not to ``subscription.events``: appending to the
    # collection would load every earlier event first (one more query per write).
    object_session(subscription).add(event)  # type: ignore[union-attr]
    return event


_EVENTS, _SUBS = ConsentEvent.__table__, Subscription.__table__
_INSERT_EVENT = _EVENTS.insert()
#: Move a subscription's chain head, for writers without the ORM; parameters from
#: :func:`head_params` (one dict, or a list of them for executemany).
MOVE_HEAD = _SUBS.update().where(_SUBS.c.id == bindparam("sub_id")).values(
    ledger_seq=bindparam("ledger_seq"), ledger_head=bindparam("ledger_head"),
    updated_at=bindparam("updated_at", type_=_SUBS.c.updated_at.type))


def head_params(row: dict[str, Any]) -> dict[str, Any]:
    """:data:`MOVE_HEAD`'s parameters for the event ``row`` (from :func:`event_row`)."""
    return {"sub_id": row["subscription_id"], "ledger_seq": row["seq"],
            "ledger_head": row["chain_hash"], "updated_at": row["at"]}


def append_now(subscription: Subscription, kind: EventKind, *, origin: str,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Like :func:`append`, as one INSERT and one UPDATE executed at once.

    For the mail worker's hot path: the ORM's unit of work spent more CPU on
    these two rows than the database did. The in-memory subscription gets the
    new head too, so a later :func:`append` in the same transaction continues
    the chain. Same rule: the caller holds the subscription's row lock.
    """
    session = object_session(subscription)
    if session is None or subscription.id is None:
        raise RuntimeError("append_now needs a persistent subscription")
    row = event_row(subscription.id, subscription.ledger_seq or 0, subscription.ledger_head,
                    kind, origin=origin, details=details)
    session.execute(_INSERT_EVENT, row)
    session.execute(MOVE_HEAD, head_params(row))
    set_committed_value(subscription, "ledger_seq", row["seq"])
    set_committed_value(subscription, "ledger_head", row["chain_hash"])
    return row


def insert_events(session: Session | scoped_session[Any], events: list[dict[str, Any]],
                  heads: list[dict[str, Any]]) -> None:
    """Write events made by :func:`event_row` and move their chain heads, one statement each
    (executemany), in the caller's transaction: the mail worker's group commit. The caller
    holds the subscriptions' row locks and made each event on the head before it."""
    if events:
        session.execute(_INSERT_EVENT, events)
        session.execute(MOVE_HEAD, heads)


def event_row(
    subscription_id: int,
    previous_seq: int,
    previous_head: str | None,
    kind: EventKind,
    *,
    origin: str,
    at: datetime | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    consent_text_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The column values of the next event of a chain, hashes included.

    For writers that insert without the ORM (the signup's fast path); the
    caller stores ``seq`` and ``chain_hash`` as the subscription's new head in
    the same transaction.
    """
    return chained_event(subscription_id, previous_seq, previous_head, kind, origin=origin,
                         at=at, ip=ip, user_agent=user_agent, consent_text_id=consent_text_id,
                         details=storable_json(details or {}))[0]


def chained_event(
    subscription_id: int,
    previous_seq: int,
    previous_head: str | None,
    kind: EventKind,
    *,
    origin: str,
    at: datetime | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    consent_text_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """:func:`event_row` and its details' canonical JSON text (for a COPY to store).

    ``details`` with string keys only; made storable here (:func:`storable_details`).
    """
    stored, details_text = storable_details(details or {})
    row: dict[str, Any] = {
        "subscription_id": subscription_id,
        "seq": previous_seq + 1,
        "kind": kind,
        "at": at or utcnow(),
        # Every value is cut to its column before it is hashed, so the chain covers exactly
        # what the database keeps (an over-long value would otherwise read as tampered).
        "ip": storable_text(ip, 45) if ip else None,
        "user_agent": storable_text(user_agent, 512) if user_agent else None,
        "consent_text_id": consent_text_id,
        "origin": storable_text(origin, 32),
        "details": stored,
    }
    row["content_hash"] = hashlib.sha256(_content_text(row, details_text).encode()).hexdigest()
    row["chain_hash"] = chain_hash(previous_head, row["seq"], row["content_hash"])
    return row, details_text


@dataclass
class Verification:
    """What ``optin ledger verify`` found."""

    subscriptions: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


#: The events whose details record the address that signed up (``email``, stored form), or
#: that an import brought in.
_SIGNUP_KINDS = (EventKind.SIGNUP_REQUESTED, EventKind.SIGNUP_REPEATED, EventKind.CONSENT_IMPORTED)


def verify_subscription(subscription: Subscription, events: list[ConsentEvent],
                        key: bytes | None = None) -> list[str]:
    """Problems in one chain (empty when intact), and in the subscription row's address,
    which the chain does not cover but its signup events name: an address swapped in the
    row would make the proof of one person's consent read as another's. With ``key`` the
    row's keyed hash is held to its address too (suppression and look-ups go by it)."""
    problems: list[str] = []
    where = f"subscription {subscription.id}"
    problems.extend(_address_problems(subscription, events, key))
    previous: str | None = None
    ordered = sorted(events, key=lambda e: e.seq)
    minimized = next((e for e in ordered if e.kind == EventKind.MINIMIZED
                      and e.redacted_at is None), None)
    for expected_seq, event in enumerate(ordered, 1):
        if event.seq != expected_seq:
            problems.append(f"{where}: event #{expected_seq} is missing (found #{event.seq})")
            return problems
        if event.redacted_at is None:
            if content_hash(event) != event.content_hash:
                problems.append(f"{where}: event #{event.seq} ({event.kind}) was modified")
        elif (problem := _redaction_problem(event, minimized)) is not None:
            problems.append(f"{where}: event #{event.seq} ({event.kind}) {problem}")
        if chain_hash(previous, event.seq, event.content_hash) != event.chain_hash:
            problems.append(f"{where}: chain broken at event #{event.seq} ({event.kind})")
            return problems
        previous = event.chain_hash
    if len(events) != (subscription.ledger_seq or 0) or previous != subscription.ledger_head:
        problems.append(
            f"{where}: chain ends at #{len(events)} but the head says #{subscription.ledger_seq}"
            " (events deleted or head altered)"
        )
    return problems


def _address_problems(subscription: Subscription, events: list[ConsentEvent],
                      key: bytes | None) -> list[str]:
    where, address = f"subscription {subscription.id}", subscription.email
    if address is None:
        return []
    problems = [f"{where}: its address is not the one its event #{e.seq} ({e.kind}) recorded "
                "(the subscription row was altered)"
                for e in events if e.kind in _SIGNUP_KINDS and e.redacted_at is None
                and isinstance((e.details or {}).get("email"), str)
                and identity(e.details["email"]) != identity(address)]
    if key is not None and keyed_hash(address, key) != subscription.email_hash:
        problems.append(f"{where}: its address hash is not its address's "
                        "(the subscription row was altered)")
    return problems


def _redaction_problem(event: ConsentEvent, minimized: ConsentEvent | None) -> str | None:
    """What is wrong with a minimized event, or None.

    Its content no longer matches its hash, so marking an event minimized would let any
    edit of it pass. What can be checked is that the retention job did it: the job appends
    a ``minimized`` event (itself verified) after the events it strips, at the instant it
    strips them, and leaves no IP, user agent or detail beyond what it keeps (or kept).
    """
    if minimized is None or minimized.seq <= event.seq or minimized.at != event.redacted_at:
        return "is marked minimized, but no minimization of the record did it (modified)"
    if (event.ip is not None or event.user_agent is not None
            or not set(event.details or {}) <= _ONCE_KEPT):
        return "was modified after its minimization"
    return None


def _subscriptions(session: Session, batch: int) -> Iterator[Subscription]:
    last_id = 0
    while True:
        rows = session.scalars(
            select(Subscription)
            .where(Subscription.id > last_id)
            .order_by(Subscription.id)
            .limit(batch)
            .options(selectinload(Subscription.events))
        ).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id
        session.expunge_all()


def verify(session: Session, subscription_ids: list[int] | None = None, batch: int = 500) -> Verification:
    """Check every chain (or the given ones), reading in batches to bound memory."""
    report = Verification()
    if subscription_ids is not None:
        subs: Iterator[Subscription] = iter(
            session.scalars(
                select(Subscription)
                .where(Subscription.id.in_(subscription_ids))
                .options(selectinload(Subscription.events))
            ).all()
        )
    else:
        subs = _subscriptions(session, batch)
    key = current_settings().hash_key
    for sub in subs:
        report.subscriptions += 1
        report.events += len(sub.events)
        report.problems.extend(verify_subscription(sub, list(sub.events), key))
    orphans = session.scalars(
        select(ConsentEvent.id).where(~ConsentEvent.subscription_id.in_(select(Subscription.id)))
    ).all()
    report.problems.extend(f"event {i} belongs to no subscription" for i in orphans)
    return report
