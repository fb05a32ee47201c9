"""The consent state machine: signup, confirm, unsubscribe (withdraw), resend.

Each public function is one transaction: the state change, its ledger events
and the outbox rows for the work it causes commit together or not at all.
Views, the CLI, the webhook and the worker all call these, so a rule lives
here once.

    pending ──confirm──▶ confirmed
       │                    │
       └──────withdraw──────┴──▶ unsubscribed ──retention──▶ minimized
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import bindparam, null, select
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import joinedload

from optin.config import Settings, current_settings
from optin.consent import ledger, lists, mailcap, mailcopies, signups
from optin.consent.addresses import (
    SMTPUTF8_WHEN_OFFERED,
    InvalidAddress,
    address_hash,
    signup_address,
)
from optin.consent.lapse import pending_lapses_at, proof_lapses_at
from optin.consent.lists import ListSnapshot, TextSnapshot
from optin.consent.statements import together
from optin.extensions import db
from optin.models import (
    ACTIVE_STATUSES,
    ConsentEvent,
    EventKind,
    MailingList,
    OutboxItem,
    OutboxKind,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from optin.ops import logs, metrics

log = logging.getLogger(__name__)

S = SubscriptionStatus

#: What a signup did, for metrics (the answer is the same for all of them).
SignupOutcome = Literal["new", "capped", "repeated", "throttled", "confirmed", "withdrawn"]
ConfirmOutcome = Literal["confirmed", "already_confirmed", "invalid"]
UnsubscribeOutcome = Literal["unsubscribed", "already", "invalid"]


@dataclass(frozen=True)
class Client:
    """Who made the request, as far as proof is concerned."""

    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def of(cls, ip: str | None, user_agent: str | None) -> Client:
        """The client as the request names it, with an IP only if it is one.

        Behind a proxy the IP comes from X-Forwarded-For, which a client can fill
        with anything; a value that is not an address is evidence of nothing, so
        none is recorded (and the proof shows the IP as not recorded).
        """
        try:
            parsed = ipaddress.ip_address(ip) if ip else None
        except ValueError:
            parsed = None
        if ip and (parsed is None or getattr(parsed, "scope_id", None)):
            # A zone id (fe80::1%eth0) names an interface of the sender's own host: no
            # public address has one, and its text is the client's to choose.
            log.warning("client IP not recorded: the request's address is not a public IP address")
            parsed = None
        return cls(ip=str(parsed) if parsed else None, user_agent=user_agent or None)


@dataclass
class SignupRequest:
    email: str
    list: str
    consent_text_version: int
    locale: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    source_url: str | None = None
    website: str | None = None  # the honeypot: people leave it empty
    #: ``referer`` when ``source_url`` is the request's Referer (the form sent none).
    source_url_from: str | None = None


class SignupInvalid(Exception):
    """Field-level problems a visitor can fix; nothing was stored."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("invalid signup")
        self.errors = errors


def new_nonce() -> str:
    return secrets.token_hex(8)


def resolve(req: SignupRequest, settings: Settings) -> tuple[ListSnapshot, TextSnapshot, str]:
    """Check what only the database can check; raise SignupInvalid with every problem.

    Depends on the list and the consent text only, never on the address's state (the
    list and text come from the per-process snapshots), so it may run in the request.
    """
    errors: dict[str, list[str]] = {}
    try:
        email = signup_address(req.email, smtputf8=settings.smtputf8 == SMTPUTF8_WHEN_OFFERED,
                               check_deliverability=settings.email_check_deliverability)
    except InvalidAddress as exc:
        errors["email"] = [str(exc)]
        email = ""
    mailing_list = lists.list_snapshot(req.list)
    text = None
    if mailing_list is None:
        errors["list"] = ["Unknown list."]
    else:
        locale = req.locale or mailing_list.default_locale
        text = lists.text_snapshot(mailing_list.id, locale, req.consent_text_version)
        if text is None:
            errors["consent_text_version"] = [
                f"No consent text version {req.consent_text_version} for locale {locale!r}."
            ]
    if errors:
        raise SignupInvalid(errors)
    assert mailing_list is not None and text is not None
    return mailing_list, text, email


def request_signup(req: SignupRequest, client: Client, settings: Settings) -> None:
    """Record a signup and queue the confirmation mail now, in one committed transaction.

    The request path does not call this (it records an intake row, ``consent.intake``,
    which the worker hands to :func:`record_signup`); scripts and tests may.
    """
    if req.website:
        log.info("signup dropped: honeypot filled")
        metrics.honeypot()
        return
    mailing_list, text, email = resolve(req, settings)
    record_signup(mailing_list, text, email, req, client, settings, at=utcnow())
    db.session.commit()


def record_signup(mailing_list: ListSnapshot, text: TextSnapshot, email: str,
                  req: SignupRequest, client: Client, settings: Settings, *,
                  at: datetime) -> SignupOutcome:
    """Run the signup state machine in the caller's transaction (the caller commits).

    ``at`` is when the visitor's request arrived: the ledger, the signup record and the
    resend interval use it, not the time this runs. Whatever the address's state (new,
    pending, confirmed, withdrawn) the caller learns only the outcome, for metrics. A
    pending signup gets at most one new mail per ``OPTIN_RESEND_INTERVAL_MINUTES``, and
    an address at most ``OPTIN_MAILS_PER_ADDRESS_PER_DAY`` (see mailcap.py); a signup
    over either is recorded and mails nothing. Each try runs in a savepoint, so a
    collision with a concurrent signup rolls back only that try.
    """
    digest = address_hash(email, settings.hash_key)
    for _ in range(3):
        try:
            with db.session.begin_nested():
                outcome = (_withdrawn_since(mailing_list, text, digest, email, req, client, at)
                           or _insert_new(mailing_list, text, email, digest, req, client,
                                          settings, at)
                           or _signup_again(mailing_list, text, digest, email, req, client,
                                            settings, at))
                if outcome is None:  # the active row went (withdrawn) between the two
                    raise _GoAgain
        except (IntegrityError, _GoAgain):
            # A concurrent signup for the same address won the insert, or a withdrawal
            # committed in between; go again, this time finding its row.
            continue
        metrics.signup(mailing_list.slug, outcome)
        log.info("signup on list %s: %s (address %s, IP %s)", mailing_list.slug, outcome,
                 logs.pseudonym(email, settings.hash_key),
                 logs.pseudonym(client.ip, settings.hash_key))
        return outcome
    raise RuntimeError("signup kept colliding")


class _GoAgain(Exception):
    """The try's savepoint rolls back and the signup is tried again."""


def _withdrawn_since(mailing_list: ListSnapshot, text: TextSnapshot, digest: str, email: str,
                     req: SignupRequest, client: Client, at: datetime) -> SignupOutcome | None:
    """A withdrawal recorded after this request arrived wins over it (unsubscribe always
    wins): when the address has no active subscription but one withdrawn after ``at``, the
    request is kept on that subscription's ledger (no names or fields, which the
    withdrawal deleted) and mails nothing; else None.

    Without this, a signup queued behind an unsubscribe would start a new pending
    subscription and mail the person who had just left.
    """
    active = db.session.scalar(select(Subscription.id).where(
        Subscription.list_id == mailing_list.id, Subscription.email_hash == digest,
        Subscription.status.in_(ACTIVE_STATUSES)))
    if active is not None:
        return None
    sub = db.session.scalar(
        select(Subscription)
        .where(Subscription.list_id == mailing_list.id, Subscription.email_hash == digest,
               Subscription.withdrawn_at.is_not(None), Subscription.withdrawn_at > at)
        .order_by(Subscription.withdrawn_at.desc()).limit(1).with_for_update())
    if sub is None:
        return None
    ledger.append(
        sub, EventKind.SIGNUP_REPEATED, origin="form", at=at, ip=client.ip,
        user_agent=client.user_agent, consent_text_id=text.id,
        details={**_evidence(req, text, email, mailing_list),
                 "entered_sha256": entered_digest(personal_values(req)), "action": WITHDRAWN_SINCE})
    return "withdrawn"


def personal_values(req: SignupRequest) -> dict[str, Any]:
    """The names, fields and source a signup entered (what a withdrawal deletes)."""
    return {
        "first_name": req.first_name or None,
        "last_name": req.last_name or None,
        "fields": req.fields or None,
        "source_url": req.source_url or None,
    }


def _evidence(req: SignupRequest, text: TextSnapshot, email: str,
              mailing_list: ListSnapshot) -> dict[str, Any]:
    """What the form showed and sent. ``email_entered``: the address as typed, when it is
    not the stored (mailable) form, e.g. a Unicode domain stored in ASCII. The privacy
    policy is the list's at the time of the signup (a later change does not rewrite it)."""
    entered = req.email.strip()
    return {
        **({"email_entered": entered} if entered != email else {}),
        "source_url": req.source_url,
        **({"source_url_from": req.source_url_from} if req.source_url_from else {}),
        "privacy_policy_url": mailing_list.privacy_policy_url,
        "fields_entered": sorted(
            k for k, v in {**req.fields, "first_name": req.first_name,
                           "last_name": req.last_name}.items() if v
        ),
        "consent_text_sha256": text.sha256,
        "consent_text_version": text.version,
        "locale": text.locale,
    }


# Literally the predicate of the partial unique index ``uq_subscription_active``
# (models.py), so PostgreSQL and SQLite infer that index as the conflict target.
ACTIVE_PREDICATE = sql_text("status IN ('pending', 'confirmed')")


_SUB = Subscription.__table__
_EVENTS, _QUEUE = ConsentEvent.__table__, OutboxItem.__table__

_EVENT_COLUMNS = ("subscription_id", "seq", "kind", "at", "ip", "user_agent", "consent_text_id",
                  "origin", "details", "content_hash", "chain_hash")
_OUTBOX_COLUMNS = ("kind", "subscription_id", "payload", "status", "attempts",
                   "next_attempt_at", "created_at")

MAIL_CAPPED = "mail capped (OPTIN_MAILS_PER_ADDRESS_PER_DAY)"
#: What a repeat signup for a pending subscription did, as its ledger event says.
#: A signup whose request arrived before a withdrawal it is processed after.
WITHDRAWN_SINCE = "none (withdrawn after this request)"
REPEAT_ACTIONS = {"repeated": "mail queued", "capped": MAIL_CAPPED, "throttled": "mail throttled"}


def _params(table: Any, prefix: str, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: bindparam(prefix + name, type_=table.c[name].type) for name in names}


def _event_insert(prefix: str) -> Any:
    return _EVENTS.insert().values(_params(_EVENTS, prefix, _EVENT_COLUMNS))


def _outbox_insert(prefix: str) -> Any:
    # One single-row INSERT per outbox row: a multi-row VALUES cannot be cached
    # compiled, and compiling cost more than running it.
    return _QUEUE.insert().values(_params(_QUEUE, prefix, _OUTBOX_COLUMNS))


def _prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {prefix + k: v for k, v in values.items()}


@functools.cache
def _insert_active(dialect: str) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING id`` on the active-subscription index."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (insert(_SUB)
            .on_conflict_do_nothing(index_elements=[_SUB.c.list_id, _SUB.c.email_hash],
                                    index_where=ACTIVE_PREDICATE)
            .returning(_SUB.c.id))


@functools.cache
def _signup_writes(dialect: str, queued: bool) -> tuple[Any, ...]:
    """A new signup's ledger event, its record, chain head and (unless capped) its
    confirmation mail."""
    writes = [ledger.MOVE_HEAD, _event_insert("ev_"), signups.insert("su_")]
    if queued:
        writes.append(_outbox_insert("ob_"))
    return together(dialect, *writes)


def _insert_new(
    mailing_list: ListSnapshot,
    text: TextSnapshot,
    email: str,
    digest: str,
    req: SignupRequest,
    client: Client,
    settings: Settings,
    now: datetime,
) -> SignupOutcome | None:
    """The common case, a new address, in few statements; its outcome (``new``, or
    ``capped`` when the address's mails for the day are spent), None if the address is active.

    ``INSERT … ON CONFLICT DO NOTHING RETURNING id`` against the partial unique
    index on active subscriptions both creates the row and tells whether one
    existed, without a SELECT … FOR UPDATE first or a savepoint. The ledger
    event, the chain head and the outbox row follow as plain INSERT/UPDATEs
    (the ORM's unit of work cost more than the database did).
    """
    personal = personal_values(req)
    dialect = db.session.get_bind().dialect.name
    values = new_subscription_values(mailing_list, text, email, digest, req, settings, now)
    sub_id = db.session.execute(_insert_active(dialect), {
        **values, "fields": values["fields"] or null()}).scalar()  # SQL NULL, not JSON null
    if sub_id is None:
        return None
    mail = mailcap.take_address_mail(digest, settings)  # after the insert: no retry counts twice
    event = signup_requested_event(sub_id, mailing_list, text, email, req, client, now,
                                   capped=not mail)
    params = {**ledger.head_params(event), **_prefixed("ev_", event),
              **_prefixed("su_", signups.row(sub_id, event["seq"], now, email, text, personal))}
    if mail:
        params.update(_prefixed("ob_", confirm_mail_values(sub_id, event["seq"], now)))
    for statement in _signup_writes(dialect, mail):
        db.session.execute(statement, params)
    return "new" if mail else "capped"


def new_subscription_values(mailing_list: ListSnapshot, text: TextSnapshot, email: str,
                            digest: str, req: SignupRequest, settings: Settings,
                            now: datetime) -> dict[str, Any]:
    """The column values of a new address's pending subscription (``fields`` None when
    nothing was entered: the writer stores that as SQL NULL). Shared with the worker's
    set-based intake (``intake_batch``), so both write the same row."""
    return {
        "list_id": mailing_list.id, "status": S.PENDING, "email": email, "email_hash": digest,
        "locale": text.locale, "consent_text_id": text.id, "nonce": new_nonce(),
        "created_at": now, "updated_at": now,
        "retain_until": pending_lapses_at(now, settings.pending_retention_days),
        "last_mail_requested_at": now, "ledger_seq": 0, **personal_values(req),
    }


def signup_requested_event(sub_id: int, mailing_list: ListSnapshot, text: TextSnapshot,
                           email: str, req: SignupRequest, client: Client, now: datetime, *,
                           capped: bool) -> dict[str, Any]:
    """The first ledger event of a new subscription (``ledger.event_row``): the request's
    evidence, at the request's time and IP; ``capped`` when its mail was over the cap."""
    return ledger.event_row(
        sub_id, 0, None, EventKind.SIGNUP_REQUESTED, origin="form", at=now, ip=client.ip,
        user_agent=client.user_agent, consent_text_id=text.id,
        details={**_evidence(req, text, email, mailing_list), "email": email,
                 "entered_sha256": entered_digest(personal_values(req)),
                 **({"action": MAIL_CAPPED} if capped else {})})


def confirm_mail_values(subscription_id: int, signup_seq: int, now: datetime) -> dict[str, Any]:
    """The outbox row of the confirmation mail for the signup whose event is ``signup_seq``."""
    return OutboxItem.pending_values(OutboxKind.CONFIRM_MAIL, subscription_id=subscription_id,
                                     payload={"signup_seq": signup_seq}, now=now)


def entered_digest(personal: dict[str, Any]) -> str:
    """SHA-256 of the names and fields as entered.

    The ledger keeps this digest, not the values: the values live in the
    signup's record (and on the subscription) and are deleted at withdrawal, yet
    a value someone later claims was entered can still be checked against the proof.
    """
    entered = {k: personal.get(k) for k in ("first_name", "last_name", "fields")}
    canonical = json.dumps(entered, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _active(list_id: int, digest: str) -> Subscription | None:
    return db.session.scalar(
        select(Subscription)
        .where(
            Subscription.list_id == list_id,
            Subscription.email_hash == digest,
            Subscription.status.in_(ACTIVE_STATUSES),
        )
        .with_for_update()
    )


def _signup_again(
    mailing_list: ListSnapshot,
    text: TextSnapshot,
    digest: str,
    email: str,
    req: SignupRequest,
    client: Client,
    settings: Settings,
    now: datetime,
) -> SignupOutcome | None:
    """A signup for an address with an active subscription, in the caller's transaction.

    The request keeps its own evidence (ledger event and signup record) and
    changes nothing a pending confirmation would confirm: whoever signed up
    before keeps their link, locale, consent text and values. If it may mail,
    its own confirmation mail carries its own link. Returns its outcome (for
    metrics), or None if the active row is gone by the time it is locked (a
    withdrawal committed in between): the caller goes again.
    """
    personal = personal_values(req)
    sub = _active(mailing_list.id, digest)
    if sub is None:
        return None

    outcome: SignupOutcome
    if sub.status == S.CONFIRMED:
        # Already consented: nothing to mail, nothing to change, but keep the fact.
        outcome, action = "confirmed", "none (already confirmed)"
    else:
        interval = timedelta(minutes=settings.resend_interval_minutes)
        due = sub.last_mail_requested_at is None or now - sub.last_mail_requested_at >= interval
        outcome = ("repeated" if due and mailcap.take_address_mail(digest, settings)
                   else "capped" if due else "throttled")
        action = REPEAT_ACTIONS[outcome]
    event = ledger.append(
        sub, EventKind.SIGNUP_REPEATED, origin="form", at=now, ip=client.ip,
        user_agent=client.user_agent, consent_text_id=text.id,
        details={**_evidence(req, text, email, mailing_list), "email": email,
                 "entered_sha256": entered_digest(personal), "action": action})
    signups.record(sub.id, event.seq, now, email, text, personal)
    if outcome == "repeated":
        sub.last_mail_requested_at = now
        db.session.add(OutboxItem(**confirm_mail_values(sub.id, event.seq, now)))
    return outcome


T = TypeVar("T")
ATTEMPTS = 3


def _collided(exc: DBAPIError) -> bool:
    """A concurrent writer got there first: a unique key (SQLite has no row locks, so two
    appends can pick the same ledger seq) or a serialization failure or deadlock (SQLSTATE
    class 40, PostgreSQL). Trying the whole transaction again settles it."""
    if isinstance(exc, IntegrityError):
        return True
    return str(getattr(exc.orig, "sqlstate", "") or "").startswith("40")


def retrying(transaction: Callable[[], T]) -> T:
    """Run a domain transaction, again (up to ATTEMPTS times) if a concurrent writer collided."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return transaction()
        except DBAPIError as exc:
            db.session.rollback()
            if attempt == ATTEMPTS or not _collided(exc):
                raise
            log.info("transaction collided with a concurrent writer (%s), trying again",
                     type(exc).__name__)
    raise AssertionError("unreachable")


def _locked(subscription_id: int) -> Subscription | None:
    # populate_existing: the view may have loaded the row before the lock; use what the lock sees.
    return db.session.get(Subscription, subscription_id, with_for_update=True,
                          populate_existing=True)


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation did, and what the page about it shows (read before the commit)."""

    outcome: ConfirmOutcome
    locale: str | None = None
    mailing_list: ListSnapshot | None = None


def record_confirmation(subscription_id: int, nonce: str, client: Client,
                        signup_seq: int | None = None,
                        at: datetime | None = None) -> Confirmation:
    """The link's POST queues the click (``consent.confirmations``); the worker calls this.

    Record consent to the signup the link was mailed for (``signup_seq``; None for a
    link older than that: the first signup), made at ``at`` (the click's time; now by
    default) by ``client``, in the caller's transaction, which it leaves to the caller to
    commit. The outcome is ``confirmed``, ``already_confirmed`` or ``invalid``; only
    ``confirmed`` wrote anything.

    The signup's values (locale, consent text, names, fields, source) become
    the subscription's, and the ``confirmed`` event names the signup it
    confirmed. Idempotent: a second call changes nothing, through whichever
    link. A withdrawn subscription's nonce no longer matches, so an old link
    cannot bring it back. Takes the subscription's row lock.
    """
    sub = db.session.scalar(
        select(Subscription).where(Subscription.id == subscription_id)
        .options(joinedload(Subscription.mailing_list))
        .with_for_update(of=Subscription)
        .execution_options(populate_existing=True)
    )
    if sub is None:
        return Confirmation("invalid")
    snapshot = ListSnapshot.of(sub.mailing_list)
    if not secrets.compare_digest(sub.nonce, nonce) or sub.status not in ACTIVE_STATUSES:
        return Confirmation("invalid", sub.locale, snapshot)
    if sub.status == S.CONFIRMED:
        return Confirmation("already_confirmed", sub.locale, snapshot)
    signup = signups.find(sub.id, signup_seq)
    if signup is None and signup_seq is not None:  # a link naming no signup of this row
        return Confirmation("invalid", sub.locale, snapshot)
    values = signups.confirmed_values(sub, signup)
    now = at or utcnow()
    event = ledger.event_row(
        sub.id, sub.ledger_seq or 0, sub.ledger_head, EventKind.CONFIRMED, origin="link", at=now,
        ip=client.ip, user_agent=client.user_agent, consent_text_id=values["consent_text_id"],
        details={"signup_seq": signup.seq if signup else None, "locale": values["locale"],
                 "entered_sha256": entered_digest(values)})
    kinds = ((OutboxKind.AC_SUBSCRIBE, OutboxKind.WELCOME_MAIL) if sub.mailing_list.send_welcome
             else (OutboxKind.AC_SUBSCRIBE,))
    written = utcnow()
    params: dict[str, Any] = {
        "sub_id": sub.id, "b_list_id": sub.list_id, "b_email_hash": sub.email_hash,
        "confirmed_at": now, "updated_at": written,
        "ledger_seq": event["seq"], "ledger_head": event["chain_hash"],
        **_prefixed("ev_", event), **_prefixed("cv_", values),
    }
    for i, kind in enumerate(kinds):
        params.update(_prefixed(f"ob{i}_", OutboxItem.pending_values(
            kind, subscription_id=sub.id, now=written)))
    for statement in _confirm_statements(db.session.get_bind().dialect.name, len(kinds)):
        db.session.execute(statement, params)
    metrics.confirmed(sub.mailing_list.slug)
    return Confirmation("confirmed", values["locale"], snapshot)


@functools.cache
def _confirm_statements(dialect: str, queued: int) -> tuple[Any, ...]:
    """The writes of a confirmation, built once: on PostgreSQL one statement.

    Lift the suppression (a new confirmed consent ends an earlier withdrawal's),
    append the ledger event, queue ``queued`` outbox rows (sync, welcome mail)
    and move the subscription and its chain head, with the confirmed signup's
    values (``cv_…``), all with the row lock the caller holds.
    """
    sup = Suppression.__table__
    lift = sup.delete().where(sup.c.list_id == bindparam("b_list_id"),
                              sup.c.email_hash == bindparam("b_email_hash"))
    move = _SUB.update().where(_SUB.c.id == bindparam("sub_id")).values(
        status=S.CONFIRMED, retain_until=None,  # kept while the consent is in use
        confirmed_at=bindparam("confirmed_at", type_=_SUB.c.confirmed_at.type),
        updated_at=bindparam("updated_at", type_=_SUB.c.updated_at.type),
        ledger_seq=bindparam("ledger_seq"), ledger_head=bindparam("ledger_head"),
        **{name: bindparam("cv_" + name, type_=_SUB.c[name].type)
           for name in signups.CONFIRMED_VALUES})
    return together(dialect, move, lift, _event_insert("ev_"),
                    *(_outbox_insert(f"ob{i}_") for i in range(queued)))


def unsubscribe(
    subscription_id: int, nonce: str | None, client: Client, *, origin: str = "link"
) -> UnsubscribeOutcome:
    """Withdraw through a signed link. Returns ``unsubscribed``, ``already`` or ``invalid``.

    Idempotent: a subscription that is already withdrawn answers ``already``
    whatever link was used, since repeating a withdrawal harms no one. Tried
    again when a concurrent writer collides.
    """
    return retrying(lambda: _unsubscribe(subscription_id, nonce, client, origin))


def _unsubscribe(subscription_id: int, nonce: str | None, client: Client,
                 origin: str) -> UnsubscribeOutcome:
    sub = _locked(subscription_id)
    if sub is None:
        db.session.rollback()
        return "invalid"
    if sub.status not in ACTIVE_STATUSES:
        db.session.rollback()
        return "already"
    if nonce is not None and not secrets.compare_digest(sub.nonce, nonce):
        db.session.rollback()
        return "invalid"
    withdraw(sub, origin=origin, client=client)
    db.session.commit()
    return "unsubscribed"


def withdraw(
    sub: Subscription,
    *,
    origin: str,
    client: Client | None = None,
    at: datetime | None = None,
    details: dict[str, Any] | None = None,
    kind: EventKind = EventKind.UNSUBSCRIBED,
    goodbye: bool = True,
) -> None:
    """Withdraw consent in the caller's transaction (the caller holds the row lock).

    ``goodbye=False`` sends no goodbye mail whatever the list says (a withdrawal found in
    an import was made elsewhere, maybe long ago: nobody is mailed after it).

    Deletes the personal fields proof does not need, starts the proof's
    retention clock, suppresses the address, and queues the withdrawal for
    every other side. Unsubscribe always wins: a queued ``ac_subscribe`` finds
    the subscription withdrawn when it runs and does nothing.
    """
    at = at or utcnow()
    was_confirmed = sub.status == S.CONFIRMED
    sub.status = S.UNSUBSCRIBED
    sub.withdrawn_at = at
    sub.withdrawal_origin = origin
    sub.nonce = new_nonce()
    sub.first_name = sub.last_name = None
    sub.fields = None
    signups.forget_personal([sub.id])
    mailcopies.forget_names([sub.id])
    sub.retain_until = (
        proof_lapses_at(at, current_settings().proof_retention_years)
        if was_confirmed
        else max(sub.retain_until or at, at)
    )
    client = client or Client()
    ledger.append(sub, kind, origin=origin, at=at, ip=client.ip, user_agent=client.user_agent,
                  details={**(details or {}), "was": "confirmed" if was_confirmed else "pending"})
    suppress(sub.list_id, sub.email_hash, reason=origin)
    metrics.unsubscribed(origin, kind)
    log.info("subscription %s withdrawn: %s via %s", sub.id, kind, origin)
    db.session.add(OutboxItem.pending(OutboxKind.AC_UNSUBSCRIBE, subscription_id=sub.id))
    if goodbye and was_confirmed and sub.mailing_list.send_goodbye:
        db.session.add(OutboxItem.pending(OutboxKind.GOODBYE_MAIL, subscription_id=sub.id))


def suppress(list_id: int, email_hash: str, *, reason: str) -> None:
    """Remember (as a keyed hash) that this address withdrew from this list."""
    exists = db.session.scalar(
        select(Suppression.id).where(
            Suppression.list_id == list_id, Suppression.email_hash == email_hash
        )
    )
    if exists is None:
        try:
            with db.session.begin_nested():
                db.session.add(Suppression(list_id=list_id, email_hash=email_hash,
                                           reason=reason))
        except IntegrityError:  # a concurrent transaction suppressed it first: it holds
            pass


def suppress_everywhere(email_hash: str) -> None:
    """Keep the address (as keyed hash) from every list, for an erasure (Art. 17), in the
    caller's transaction: no import, reconcile or backfill adds it again, known here or not
    (a list made later gets the entry too, ``lists.create_list``); only a new confirmed
    double opt-in lifts it, list by list."""
    for list_id in db.session.scalars(select(MailingList.id).order_by(MailingList.id)):
        suppress(list_id, email_hash, reason=lists.ERASURE_REASON)


def is_suppressed(list_id: int, email_hash: str) -> bool:
    return (
        db.session.scalar(
            select(Suppression.id).where(
                Suppression.list_id == list_id, Suppression.email_hash == email_hash
            )
        )
        is not None
    )


def resend_confirmation(subscription_id: int, nonce: str, settings: Settings,
                        signup_seq: int | None = None, *, at: datetime | None = None) -> bool:
    """Queue a fresh confirmation mail for a pending signup whose link expired, in the
    caller's transaction (the worker's, from ``resends.py``): for the same signup
    (``signup_seq``; None: the first), so the new link confirms what the old one would
    have. ``at`` is when it was asked for. Whether a mail was queued; the page the
    visitor saw said the same either way.
    """
    sub = _locked(subscription_id)
    now = at or utcnow()
    interval = timedelta(minutes=settings.resend_interval_minutes)
    signup = signups.find(sub.id, signup_seq) if sub is not None else None
    if (
        sub is None
        or sub.status != S.PENDING
        or not secrets.compare_digest(sub.nonce, nonce)
        or (signup is None and signup_seq is not None)
        or (sub.last_mail_requested_at and now - sub.last_mail_requested_at < interval)
        or not mailcap.take_address_mail(sub.email_hash, settings)
    ):
        return False
    sub.last_mail_requested_at = now
    seq = signup.seq if signup else None
    ledger.append(sub, EventKind.CONFIRMATION_RESEND_REQUESTED, origin="link", at=now,
                  details={"signup_seq": seq})
    db.session.add(OutboxItem.pending(OutboxKind.CONFIRM_MAIL, subscription_id=sub.id, now=now,
                                      payload={"signup_seq": seq} if seq else None))
    return True
