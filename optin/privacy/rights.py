"""The data subject's rights, as operators answer them: access, portability, erasure.

Addresses are found by their keyed hash, so a record that was minimized long
ago (address gone, hash kept) is still found and reported. Every call is
audited (``audit.py``) and noted on the ledger of each subscription it
touched, in the same transaction as its effect.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from optin.config import current_settings
from optin.consent import confirmations, intake, signups, subscriptions, withdrawals
from optin.consent.addresses import InvalidAddress, address_hash, normalize_email
from optin.consent.lapse import proof_lapses_at
from optin.extensions import db
from optin.models import (
    ACTIVE_STATUSES,
    ConsentEvent,
    ConsentText,
    EventKind,
    MailingList,
    Signup,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from optin.privacy import audit

S = SubscriptionStatus

__all__ = ["ErasureBusy", "InvalidAddress", "erase", "export", "identify", "iso", "lookup", "retention_note",
           "subscriptions_of", "summary"]

ART_17_3_E = (
    "Art. 17(3)(e) GDPR: the record of the consent is kept only as long as it is needed to "
    "establish, exercise or defend legal claims (§§ 195, 199 BGB: until the end of the year of "
    "the withdrawal plus the limitation period), blocked from every other use, then minimized "
    "automatically."
)

# What proof keeps until it lapses, and what is left after minimization.
KEPT_AS_PROOF = [
    "email address",
    "signup: time, IP address, user agent, source URL and the values entered, as recorded "
    "in the ledger",
    "the consent text shown (version and SHA-256)",
    "confirmation mail record: send time, Message-ID, template version, body hashes",
    "confirmation: time, IP address, user agent",
    "withdrawal and erasure: time and channel",
]
#: What every erasure keeps, whether the address was known or not (the answer says so
#: alike, so it tells nothing about whether the address was known).
DO_NOT_CONTACT = ("Its keyed hash is kept on every list's do-not-contact list (suppression), "
                  "so that no import or sync adds it again; only a new confirmed double "
                  "opt-in lifts it.")
KEPT_AFTER_MINIMIZATION = [
    "keyed hash of the address (HMAC; keeps the address from being re-added without new consent)",
    "event kinds and dates, consent text version, hash chain",
]


class SubscriptionSummary(TypedDict):
    """A consent cycle in brief, with how long it is kept (``SubscriptionSummarySchema``)."""

    id: int
    list: str
    status: str
    created_at: datetime
    confirmed_at: datetime | None
    withdrawn_at: datetime | None
    withdrawal_origin: str | None
    erased_at: datetime | None
    minimized_at: datetime | None
    retain_until: datetime | None
    retention: str


class SubscriptionRecord(SubscriptionSummary):
    """Everything stored on a consent cycle, events included (``SubscriptionRecordSchema``)."""

    list_name: str
    email: str | None
    locale: str | None
    first_name: str | None
    last_name: str | None
    fields: dict[str, Any] | None
    source_url: str | None
    consent_text_id: int | None
    activecampaign_contact_id: str | None
    signups: list[Signup]
    events: list[ConsentEvent]


class SuppressionRecord(TypedDict):
    list: str
    reason: str | None
    since: datetime


class ContactExport(TypedDict):
    """Art. 15 / Art. 20 (``ContactExportSchema``)."""

    address: str
    address_hash: str
    generated_at: datetime
    purpose: str
    recipients: list[str]
    subscriptions: list[SubscriptionRecord]
    consent_texts: list[ConsentText]
    suppressions: list[SuppressionRecord]
    queued_signups: list[intake.QueuedSignup]
    queued_confirmations: list[confirmations.QueuedConfirmation]
    queued_withdrawals: list[withdrawals.QueuedWithdrawal]


class ContactLookup(TypedDict):
    """An address's consent cycles in brief (``ContactLookupSchema``)."""

    address: str
    address_hash: str
    subscriptions: list[SubscriptionSummary]


class ErasedSubscription(TypedDict):
    subscription_id: int
    list: str
    status_before: str
    status: str
    deleted_now: list[str]
    kept: list[str]
    kept_until: datetime | None
    retention: str


class Erasure(TypedDict):
    """What Art. 17 erasure deleted now and what it keeps as proof (``ErasureSchema``)."""

    address_hash: str
    erased_at: datetime
    found: bool
    detail: str
    legal_basis: str | None
    activecampaign: str
    subscriptions: list[ErasedSubscription]


class ErasureBusy(Exception):
    """A worker is processing a signup of the address right now and itself waits for a
    delivery holding a subscription: what it creates cannot be erased yet, so the erasure
    changed nothing and is to be asked again in a few seconds (``RETRY_AFTER_SECONDS``)."""


RETRY_AFTER_SECONDS = 5


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def identify(raw: str) -> tuple[str, str]:
    """Normalized address and its keyed hash (raises :class:`InvalidAddress`)."""
    email = normalize_email(raw)
    return email, address_hash(email, current_settings().hash_key)


def subscriptions_of(digest: str, *, list_id: int | None = None,
                     lock: bool = False) -> list[Subscription]:
    """Every consent cycle of the address (on one list, or all), oldest first."""
    query = select(Subscription).where(Subscription.email_hash == digest).order_by(Subscription.id)
    if list_id is not None:
        query = query.where(Subscription.list_id == list_id)
    if lock:
        query = query.with_for_update()
    return list(db.session.scalars(query))


def retention_note(sub: Subscription) -> str:
    """In one sentence: how long this record is kept, and why."""
    until = iso(sub.retain_until)
    if sub.status == S.CONFIRMED:
        return "Kept while the subscription is active (consent in use); no end date."
    if sub.status == S.PENDING:
        return f"Never confirmed: minimized on {until} unless confirmed before."
    if sub.status == S.UNSUBSCRIBED:
        if sub.confirmed_at is None:
            return f"Withdrawn before confirmation: minimized on {until}."
        return f"Consent withdrawn: proof kept until {until} (Art. 17(3)(e) GDPR), then minimized."
    return (f"Minimized on {iso(sub.minimized_at)}: only the keyed address hash and event "
            "kinds and dates remain.")


def summary(sub: Subscription) -> SubscriptionSummary:
    return {
        "id": sub.id,
        "list": sub.mailing_list.slug,
        "status": sub.status,
        "created_at": sub.created_at,
        "confirmed_at": sub.confirmed_at,
        "withdrawn_at": sub.withdrawn_at,
        "withdrawal_origin": sub.withdrawal_origin,
        "erased_at": sub.erased_at,
        "minimized_at": sub.minimized_at,
        "retain_until": sub.retain_until,
        "retention": retention_note(sub),
    }


def _record(sub: Subscription) -> SubscriptionRecord:
    return {
        **summary(sub),
        "list_name": sub.mailing_list.name,
        "email": sub.email,
        "locale": sub.locale,
        "first_name": sub.first_name,
        "last_name": sub.last_name,
        "fields": sub.fields,
        "source_url": sub.source_url,
        "consent_text_id": sub.consent_text_id,
        "activecampaign_contact_id": sub.ac_contact_id,
        "signups": signups.of(sub.id),
        "events": list(sub.events),
    }


def export(raw_email: str, actor: str) -> ContactExport:
    """Everything stored about the address (Art. 15 access, Art. 20 portability).

    Audited as ``access`` and noted as ``accessed`` on each subscription's
    ledger before the export is built, so the export shows its own request.
    """
    email, digest = identify(raw_email)
    subs = subscriptions_of(digest, lock=True)
    audit.record(actor, "access", email_hash=digest, details={"subscriptions": len(subs)})
    audit.note_on_ledger(subs, EventKind.ACCESSED, actor, purpose="access")
    db.session.commit()

    subs = subscriptions_of(digest)
    text_ids = {s.consent_text_id for s in subs} | {
        e.consent_text_id for s in subs for e in s.events}
    texts = list(db.session.scalars(
        select(ConsentText).where(ConsentText.id.in_(text_ids - {None})).order_by(ConsentText.id)
    ))
    suppressions = db.session.execute(
        select(MailingList.slug, Suppression.reason, Suppression.created_at)
        .join(MailingList, MailingList.id == Suppression.list_id)
        .where(Suppression.email_hash == digest).order_by(MailingList.slug)
    ).all()
    recipients = sorted({
        f"ActiveCampaign (list {s.mailing_list.ac_list_id})"
        for s in subs if s.mailing_list.ac_list_id and s.confirmed_at
    })
    return {
        "address": email,
        "address_hash": digest,
        "generated_at": utcnow(),
        "purpose": "Newsletter by email, with the consent given by double opt-in (Art. 6(1)(a) "
                   "GDPR); proof of that consent (Art. 7(1) GDPR).",
        "recipients": recipients,
        "subscriptions": [_record(s) for s in subs],
        "consent_texts": texts,
        "suppressions": [{"list": slug, "reason": reason, "since": at}
                         for slug, reason, at in suppressions],
        "queued_signups": intake.queued(digest),
        "queued_confirmations": confirmations.queued(digest),
        "queued_withdrawals": withdrawals.queued([s.id for s in subs]),
    }


def lookup(raw_email: str, actor: str) -> ContactLookup:
    """The address's subscriptions in brief (no events), audited as ``lookup``."""
    email, digest = identify(raw_email)
    subs = subscriptions_of(digest, lock=True)
    audit.record(actor, "lookup", email_hash=digest, details={"subscriptions": len(subs)})
    audit.note_on_ledger(subs, EventKind.ACCESSED, actor, purpose="lookup")
    db.session.commit()
    return {"address": email, "address_hash": digest,
            "subscriptions": [summary(s) for s in subscriptions_of(digest)]}


def erase(raw_email: str, actor: str) -> Erasure:
    """Art. 17 erasure of the address on every list, in one transaction.

    Active subscriptions are withdrawn (kind ``erased``, origin ``operator``),
    which suppresses the address and queues the withdrawal for
    ActiveCampaign. On every subscription the personal data proof does not
    need (names, custom fields) is deleted at once; the address and the
    proof events stay until ``retain_until`` (Art. 17(3)(e)), when the
    retention job minimizes them. Repeating it changes nothing more than a
    further ``erased`` note on the ledger.

    A subscription a mail delivery holds makes the erasure wait no longer than
    ``OPTIN_WITHDRAWAL_LOCK_WAIT_SECONDS``: it is then queued for the worker
    (``consent.withdrawals``), which erases it as soon as the delivery ends, and the
    answer is the one the erasure will have given. A queued signup of the address that a
    worker is processing meanwhile (it may wait for such a delivery too) is not waited
    for either: :class:`ErasureBusy`, nothing changed, ask again.
    """
    _, digest = identify(raw_email)
    now = utcnow()
    dropped, subs, results, pushed = withdrawals.now_or_queued(
        lambda: _erase_now(digest, actor, now), lambda: _erase_queued(digest, actor, now))
    lapse_dates = [r["kept_until"] for r in results if r["kept_until"] is not None]
    if not subs:
        detail = ("No consent records of this address are stored." if not dropped else
                  "Signups of this address that were still queued were deleted; no other "
                  "consent records of it are stored.") + " " + DO_NOT_CONTACT
    else:
        detail = ("Personal data not needed as proof of consent was deleted now. "
                  + (f"The proof of consent is kept until {max(lapse_dates).isoformat()} at the latest, "
                     "blocked from every other use, then minimized automatically."
                     if lapse_dates else "The records were already minimized. ")
                  + DO_NOT_CONTACT)
    return {
        "address_hash": digest,
        "erased_at": now,
        "found": bool(subs) or bool(dropped),
        "detail": detail,
        "legal_basis": ART_17_3_E if lapse_dates else None,
        "activecampaign": "withdrawal queued" if pushed else "nothing to push (no active "
                          "subscription)",
        "subscriptions": results,
    }


_ErasureDone = tuple[int, list[Subscription], list[ErasedSubscription], bool]


def _erase_now(digest: str, actor: str, now: datetime) -> _ErasureDone:
    withdrawals.bound_lock_wait()
    # First: signups still queued for the state machine never happen (erasure wins), and
    # one a worker is processing right now is waited for, so its subscription is erased too.
    dropped = intake.drop_queued(digest)
    # So do clicks on its confirmation links still queued (they hold an IP and user agent).
    dropped_clicks = confirmations.drop_queued(digest)
    subs = subscriptions_of(digest, lock=True)
    results: list[ErasedSubscription] = []
    pushed = False
    for sub in subs:
        was, withdrew = withdrawals.erase(sub, actor=actor, at=now)
        pushed = pushed or withdrew
        results.append(_erased(sub, was))
    subscriptions.suppress_everywhere(digest)
    audit.record(actor, "erase", email_hash=digest,
                 details={"subscriptions": len(subs), "withdrawn": pushed,
                          "queued_signups_dropped": dropped,
                          "queued_confirmations_dropped": dropped_clicks})
    db.session.commit()
    return dropped, subs, results, pushed


def _erase_queued(digest: str, actor: str, now: datetime) -> _ErasureDone:
    """A subscription is held by a delivery: queue each subscription's erasure (read
    without a lock) and answer what it will do. Waits for no lock (a signup being processed
    is skipped and makes it :class:`ErasureBusy`), and no longer than the lock wait for any."""
    withdrawals.bound_lock_wait()
    try:
        dropped = intake.drop_queued(digest, skip_locked=True)
        busy = intake.in_flight(digest)
        confirmations.drop_queued(digest)  # skips a click being applied: its apply blanks it
    except DBAPIError as exc:
        db.session.rollback()
        if not withdrawals.lock_timed_out(exc):
            raise
        raise ErasureBusy from None
    if busy:
        db.session.rollback()
        raise ErasureBusy
    subs = subscriptions_of(digest)
    withdrawing = withdrawals.pending([sub.id for sub in subs])
    results: list[ErasedSubscription] = []
    pushed = False
    settings = current_settings()
    for sub in subs:
        withdrawals.queue_erasure(sub.id, actor=actor, at=now)
        was = S.UNSUBSCRIBED if sub.id in withdrawing and sub.status in ACTIVE_STATUSES \
            else sub.status
        # What the erasure will leave (subscriptions.withdraw's retention), unsaved.
        after = Subscription(status=sub.status, retain_until=sub.retain_until,
                             confirmed_at=sub.confirmed_at, minimized_at=sub.minimized_at)
        if sub.status in ACTIVE_STATUSES:
            pushed = pushed or was in ACTIVE_STATUSES
            after.status = S.UNSUBSCRIBED
            after.retain_until = (proof_lapses_at(now, settings.proof_retention_years)
                                  if sub.confirmed_at is not None
                                  else max(sub.retain_until or now, now))
        results.append({**_erased(after, was), "subscription_id": sub.id,
                        "list": sub.mailing_list.slug})
    subscriptions.suppress_everywhere(digest)
    audit.record(actor, "erase", email_hash=digest,
                 details={"subscriptions": len(subs), "withdrawn": pushed,
                          "queued_signups_dropped": dropped, "queued": True})
    db.session.commit()
    return dropped, subs, results, pushed


def _erased(sub: Subscription, was: str) -> ErasedSubscription:
    minimized = sub.status == S.MINIMIZED
    return {
        "subscription_id": sub.id,
        "list": sub.mailing_list.slug if sub.mailing_list is not None else "",
        "status_before": was,
        "status": sub.status,
        "deleted_now": ["first_name", "last_name", "fields"],
        "kept": KEPT_AFTER_MINIMIZATION if minimized else KEPT_AS_PROOF,
        "kept_until": None if minimized else sub.retain_until,
        "retention": retention_note(sub),
    }
