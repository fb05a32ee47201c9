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

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from . import ledger, outbox
from .addresses import InvalidAddress, address_hash, normalize_email
from .config import Settings, current_settings
from .extensions import db
from .models import (
    ConsentText,
    MailingList,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from .retention import pending_lapses_at, proof_lapses_at

log = logging.getLogger(__name__)

S = SubscriptionStatus


@dataclass(frozen=True)
class Client:
    """Who made the request, as far as proof is concerned."""

    ip: str | None = None
    user_agent: str | None = None


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


class SignupInvalid(Exception):
    """Field-level problems a visitor can fix; nothing was stored."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("invalid signup")
        self.errors = errors


def new_nonce() -> str:
    return secrets.token_hex(8)


def _resolve(req: SignupRequest, settings: Settings) -> tuple[MailingList, ConsentText, str]:
    """Check what only the database can check; raise SignupInvalid with every problem."""
    errors: dict[str, list[str]] = {}
    try:
        email = normalize_email(req.email, check_deliverability=settings.email_check_deliverability)
    except InvalidAddress as exc:
        errors["email"] = [str(exc)]
        email = ""
    mailing_list = db.session.scalar(select(MailingList).where(MailingList.slug == req.list))
    text = None
    if mailing_list is None:
        errors["list"] = ["Unknown list."]
    else:
        locale = req.locale or mailing_list.default_locale
        text = db.session.scalar(
            select(ConsentText).where(
                ConsentText.list_id == mailing_list.id,
                ConsentText.locale == locale,
                ConsentText.version == req.consent_text_version,
            )
        )
        if text is None:
            errors["consent_text_version"] = [
                f"No consent text version {req.consent_text_version} for locale {locale!r}."
            ]
    if errors:
        raise SignupInvalid(errors)
    assert mailing_list is not None and text is not None
    return mailing_list, text, email


def request_signup(req: SignupRequest, client: Client, settings: Settings) -> None:
    """Record a signup and queue the confirmation mail; the caller learns nothing more.

    Whatever the address's state (new, pending, confirmed, withdrawn), this
    returns the same way, so the response cannot reveal membership. A pending
    signup gets at most one new mail per ``OPTIN_RESEND_INTERVAL_MINUTES``.
    """
    if req.website:
        log.info("signup dropped: honeypot filled")
        return
    mailing_list, text, email = _resolve(req, settings)
    digest = address_hash(email, settings.hash_key)
    for _ in range(3):
        try:
            _signup(mailing_list, text, email, digest, req, client, settings)
            db.session.commit()
            return
        except IntegrityError:
            # A concurrent signup for the same address won the insert; go again,
            # this time finding its row.
            db.session.rollback()
    raise RuntimeError("signup kept colliding")


def entered_digest(personal: dict[str, Any]) -> str:
    """SHA-256 of the names and fields as entered.

    The ledger keeps this digest, not the values: the values live on the
    subscription row and are deleted at withdrawal, yet a value someone later
    claims was entered can still be checked against the proof.
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
            Subscription.status.in_(S.ACTIVE),
        )
        .with_for_update()
    )


def _signup(
    mailing_list: MailingList,
    text: ConsentText,
    email: str,
    digest: str,
    req: SignupRequest,
    client: Client,
    settings: Settings,
) -> None:
    now = utcnow()
    personal = {
        "first_name": req.first_name or None,
        "last_name": req.last_name or None,
        "fields": req.fields or None,
        "source_url": req.source_url or None,
    }
    evidence = {
        "source_url": req.source_url,
        "fields_entered": sorted(
            k for k, v in {**req.fields, "first_name": req.first_name,
                           "last_name": req.last_name}.items() if v
        ),
        "consent_text_sha256": text.sha256,
        "consent_text_version": text.version,
        "locale": text.locale,
    }
    sub = _active(mailing_list.id, digest)
    if sub is None:
        sub = Subscription(
            list_id=mailing_list.id,
            status=S.PENDING,
            email=email,
            email_hash=digest,
            locale=text.locale,
            consent_text_id=text.id,
            nonce=new_nonce(),
            created_at=now,
            retain_until=pending_lapses_at(now, settings.pending_retention_days),
            last_mail_requested_at=now,
            **personal,
        )
        with db.session.begin_nested():
            db.session.add(sub)
            db.session.flush()
        ledger.append(sub, "signup_requested", origin="form", at=now, ip=client.ip,
                      user_agent=client.user_agent, consent_text_id=text.id,
                      details={**evidence, "email": email,
                               "entered_sha256": entered_digest(personal)})
        outbox.enqueue("confirm_mail", subscription_id=sub.id)
        return

    if sub.status == S.CONFIRMED:
        # Already consented: nothing to mail, nothing to change, but keep the fact.
        ledger.append(sub, "signup_repeated", origin="form", at=now, ip=client.ip,
                      user_agent=client.user_agent, consent_text_id=text.id,
                      details={**evidence, "action": "none (already confirmed)"})
        return

    # Pending: the latest form is what a confirmation will agree to.
    for key, value in personal.items():
        setattr(sub, key, value)
    sub.locale, sub.consent_text_id = text.locale, text.id
    sub.email = email
    interval = timedelta(minutes=settings.resend_interval_minutes)
    resend = sub.last_mail_requested_at is None or now - sub.last_mail_requested_at >= interval
    ledger.append(sub, "signup_repeated", origin="form", at=now, ip=client.ip,
                  user_agent=client.user_agent, consent_text_id=text.id,
                  details={**evidence, "action": "mail queued" if resend else "mail throttled"})
    if resend:
        sub.last_mail_requested_at = now
        outbox.enqueue("confirm_mail", subscription_id=sub.id)


def _locked(subscription_id: int) -> Subscription | None:
    # populate_existing: the view may have loaded the row before the lock; use what the lock sees.
    return db.session.get(Subscription, subscription_id, with_for_update=True,
                          populate_existing=True)


def confirm(subscription_id: int, nonce: str, client: Client) -> str:
    """Record consent. Returns ``confirmed``, ``already_confirmed`` or ``invalid``.

    Idempotent: a second call changes nothing. A withdrawn subscription's nonce
    no longer matches, so an old link cannot bring it back.
    """
    sub = _locked(subscription_id)
    if sub is None or not secrets.compare_digest(sub.nonce, nonce):
        db.session.rollback()
        return "invalid"
    if sub.status == S.CONFIRMED:
        db.session.rollback()
        return "already_confirmed"
    if sub.status != S.PENDING:
        db.session.rollback()
        return "invalid"
    now = utcnow()
    sub.status = S.CONFIRMED
    sub.confirmed_at = now
    sub.retain_until = None  # kept while the consent is in use
    ledger.append(sub, "confirmed", origin="link", at=now, ip=client.ip,
                  user_agent=client.user_agent, consent_text_id=sub.consent_text_id)
    # A new confirmed consent lifts an earlier withdrawal's suppression.
    db.session.execute(
        Suppression.__table__.delete().where(
            Suppression.list_id == sub.list_id, Suppression.email_hash == sub.email_hash
        )
    )
    outbox.enqueue("ac_subscribe", subscription_id=sub.id)
    if sub.mailing_list.send_welcome:
        outbox.enqueue("welcome_mail", subscription_id=sub.id)
    db.session.commit()
    return "confirmed"


def unsubscribe(
    subscription_id: int, nonce: str | None, client: Client, *, origin: str = "link"
) -> str:
    """Withdraw through a signed link. Returns ``unsubscribed``, ``already`` or ``invalid``.

    Idempotent: a subscription that is already withdrawn answers ``already``
    whatever link was used, since repeating a withdrawal harms no one.
    """
    sub = _locked(subscription_id)
    if sub is None:
        db.session.rollback()
        return "invalid"
    if sub.status not in S.ACTIVE:
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
    kind: str = "unsubscribed",
) -> None:
    """Withdraw consent in the caller's transaction (the caller holds the row lock).

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
    sub.retain_until = (
        proof_lapses_at(at, current_settings().proof_retention_years)
        if was_confirmed
        else max(sub.retain_until or at, at)
    )
    client = client or Client()
    ledger.append(sub, kind, origin=origin, at=at, ip=client.ip, user_agent=client.user_agent,
                  details={**(details or {}), "was": "confirmed" if was_confirmed else "pending"})
    suppress(sub.list_id, sub.email_hash, reason=origin)
    outbox.enqueue("ac_unsubscribe", subscription_id=sub.id)
    if was_confirmed and sub.mailing_list.send_goodbye:
        outbox.enqueue("goodbye_mail", subscription_id=sub.id)


def suppress(list_id: int, email_hash: str, *, reason: str) -> None:
    """Remember (as a keyed hash) that this address withdrew from this list."""
    exists = db.session.scalar(
        select(Suppression.id).where(
            Suppression.list_id == list_id, Suppression.email_hash == email_hash
        )
    )
    if exists is None:
        with db.session.begin_nested():
            db.session.add(Suppression(list_id=list_id, email_hash=email_hash, reason=reason))


def is_suppressed(list_id: int, email_hash: str) -> bool:
    return (
        db.session.scalar(
            select(Suppression.id).where(
                Suppression.list_id == list_id, Suppression.email_hash == email_hash
            )
        )
        is not None
    )


def resend_confirmation(subscription_id: int, nonce: str, settings: Settings) -> None:
    """Queue a fresh confirmation mail for a pending signup whose link expired.

    Says nothing back: the page answers the same whether or not a mail goes out.
    """
    sub = _locked(subscription_id)
    now = utcnow()
    interval = timedelta(minutes=settings.resend_interval_minutes)
    if (
        sub is None
        or sub.status != S.PENDING
        or not secrets.compare_digest(sub.nonce, nonce)
        or (sub.last_mail_requested_at and now - sub.last_mail_requested_at < interval)
    ):
        db.session.rollback()
        return
    sub.last_mail_requested_at = now
    ledger.append(sub, "confirmation_resend_requested", origin="link", at=now)
    outbox.enqueue("confirm_mail", subscription_id=sub.id)
    db.session.commit()
