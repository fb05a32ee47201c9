"""Compare an ActiveCampaign list with the consent records and repair the drift.

ActiveCampaign's webhooks are never retried, so a missed unsubscribe would
leave the two sides apart for good; this walks the list's members (all
statuses, 100 a page) and compares each with the subscriptions of the same
address (by keyed hash) on the lists mapped to it:

* withdrawn here, subscribed there -> the unsubscribe is queued (``ac_unsubscribe``);
* unsubscribed there, confirmed here -> the withdrawal is recorded here (origin
  ``activecampaign``, details ``{"via": "reconcile"}``), unless this
  consent's own subscribe is still queued or dead (then ActiveCampaign's
  unsubscribe is older than the consent, and the subscribe will supersede it);
* subscribed there, no confirmed consent here -> reported only: a consent is never invented;
* confirmed here, missing (or unconfirmed) there -> the subscribe is queued again;
* confirmed here, bounced there -> reported.

Repairs go through the outbox (retries, ledger ``synced`` events) or the
state machine, one short transaction each, committed before the next page is
fetched (on SQLite the throttle must be able to write between pages).
``dry_run`` reports and changes nothing. The worker runs this every
``OPTIN_AC_RECONCILE_MINUTES``.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from typing import Any

from sqlalchemy import select

from optin.activecampaign import sync
from optin.activecampaign.client import PAGE_MAX, STATUS_ACTIVE, STATUS_BOUNCED, STATUS_UNSUBSCRIBED
from optin.config import current_settings
from optin.consent import subscriptions
from optin.consent.addresses import InvalidAddress, address_hash, normalize_email
from optin.extensions import db
from optin.models import (
    ACTIVE_STATUSES,
    MailingList,
    OutboxItem,
    OutboxKind,
    OutboxStatus,
    Subscription,
    SubscriptionStatus,
    utcnow,
)

log = logging.getLogger(__name__)
S = SubscriptionStatus

# Finding kinds, in the order the report prints them, with what they mean.
UNSUBSCRIBE_QUEUED = "unsubscribe_queued"
WITHDRAWAL_RECORDED = "withdrawal_recorded"
NO_CONSENT_HERE = "no_consent_here"
SUBSCRIBE_QUEUED = "subscribe_queued"
SYNC_WAITING = "sync_waiting"
BOUNCED_THERE = "bounced_there"
KINDS = {  # kind: (the drift, what was done, what a dry run would do)
    UNSUBSCRIBE_QUEUED: ("withdrawn here, subscribed there", "unsubscribe queued",
                         "would queue the unsubscribe"),
    WITHDRAWAL_RECORDED: ("unsubscribed there, confirmed here", "withdrawal recorded",
                          "would record the withdrawal"),
    NO_CONSENT_HERE: ("subscribed there, no confirmed consent here", "check in ActiveCampaign",
                      "check in ActiveCampaign"),
    SUBSCRIBE_QUEUED: ("confirmed here, not subscribed there", "subscribe queued",
                       "would queue the subscribe"),
    SYNC_WAITING: ("unsubscribed there, confirmed here since", "its subscribe is queued or dead",
                   "its subscribe is queued or dead"),
    BOUNCED_THERE: ("confirmed here, bounced there", "reported", "reported"),
}


@dataclass(frozen=True)
class Finding:
    kind: str
    email: str | None
    ac_contact_id: str | None = None
    subscription_id: int | None = None


@dataclass
class Report:
    list_slug: str
    ac_list_id: int
    dry_run: bool = False
    members: int = 0
    findings: list[Finding] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)

    def counts(self) -> dict[str, int]:
        return {kind: self.count(kind) for kind in KINDS}


class ReconcileUnavailable(RuntimeError):
    """ActiveCampaign is not configured (dry-run) or the list has no ActiveCampaign id."""


def _hash(email: str) -> str:
    with contextlib.suppress(InvalidAddress):
        email = normalize_email(email)
    return address_hash(email, current_settings().hash_key)


def _chunks(members: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Members a page at a time; the next page is fetched only when the next chunk is asked for."""
    while chunk := list(islice(members, PAGE_MAX)):
        yield chunk


def _waiting(kind: OutboxKind, subscription_id: int,
             statuses: tuple[OutboxStatus, ...] = (OutboxStatus.PENDING,)) -> bool:
    return db.session.scalar(
        select(OutboxItem.id).where(OutboxItem.kind == kind,
                                    OutboxItem.subscription_id == subscription_id,
                                    OutboxItem.status.in_(statuses)).limit(1)
    ) is not None


def reconcile(mailing_list: MailingList, *, dry_run: bool = False) -> Report:
    """Compare the list with ActiveCampaign and repair what can be repaired (see module doc)."""
    ac = sync.client()
    if ac is None:
        raise ReconcileUnavailable("ActiveCampaign is not configured (OPTIN_AC_URL unset): dry-run")
    if mailing_list.ac_list_id is None:
        raise ReconcileUnavailable(f"list {mailing_list.slug} has no ActiveCampaign list id")
    report = Report(mailing_list.slug, mailing_list.ac_list_id, dry_run)
    list_id, ac_list = mailing_list.id, mailing_list.ac_list_id
    seen: set[str] = set()
    for chunk in _chunks(ac.list_members(ac_list)):
        digests = {str(m.get("id")): _hash(str(m.get("email") or "")) for m in chunk}
        rows = db.session.scalars(
            select(Subscription)
            .where(Subscription.list_id == list_id,
                   Subscription.email_hash.in_(set(digests.values())))
            .order_by(Subscription.id)
        ).all()
        by_hash: dict[str, list[Subscription]] = defaultdict(list)
        for row in rows:
            by_hash[row.email_hash].append(row)
        for member in chunk:
            contact_id = str(member.get("id"))
            digest = digests[contact_id]
            seen.add(digest)
            report.members += 1
            finding = _compare(member, contact_id, digest, by_hash[digest], list_id, ac_list,
                               dry_run)
            if finding is not None:
                report.findings.append(finding)
        db.session.commit()  # before the next page's request
    for finding in _missing_there(list_id, seen, dry_run):
        report.findings.append(finding)
    db.session.commit()
    return report


def _compare(member: dict[str, Any], contact_id: str, digest: str, subs: list[Subscription],
             list_id: int, ac_list: int, dry_run: bool) -> Finding | None:
    status = member.get("listStatus")
    email = member.get("email")
    confirmed = next((s for s in subs if s.status == S.CONFIRMED), None)
    withdrawn = [s for s in subs if s.status not in ACTIVE_STATUSES]
    if status == STATUS_ACTIVE:
        if confirmed is not None:
            if confirmed.ac_contact_id is None and not dry_run:
                confirmed.ac_contact_id = contact_id
            return None
        if withdrawn or subscriptions.is_suppressed(list_id, digest):
            if not dry_run:
                _queue_unsubscribe(withdrawn[-1] if withdrawn else None, contact_id, ac_list)
            return Finding(UNSUBSCRIBE_QUEUED, email, contact_id,
                           withdrawn[-1].id if withdrawn else None)
        return Finding(NO_CONSENT_HERE, email, contact_id)
    if confirmed is None:
        return None
    if status == STATUS_UNSUBSCRIBED:
        if _waiting(OutboxKind.AC_SUBSCRIBE, confirmed.id, (OutboxStatus.PENDING, OutboxStatus.DEAD)):
            return Finding(SYNC_WAITING, email, contact_id, confirmed.id)
        if not dry_run:
            _record_withdrawal(confirmed.id, contact_id, member.get("contactList") or {})
        return Finding(WITHDRAWAL_RECORDED, email, contact_id, confirmed.id)
    if status == STATUS_BOUNCED:
        return Finding(BOUNCED_THERE, email, contact_id, confirmed.id)
    # 0 (unconfirmed in ActiveCampaign) or no status: the subscribe did not land.
    return _queue_subscribe(confirmed, email, contact_id, dry_run)


def _queue_unsubscribe(sub: Subscription | None, contact_id: str, ac_list: int) -> None:
    if sub is None:  # suppressed here with no subscription row left: name the contact
        db.session.add(OutboxItem.pending(OutboxKind.AC_UNSUBSCRIBE, payload={
            "ac_contact_id": contact_id, "ac_list_id": ac_list}))
        return
    if sub.ac_contact_id is None:
        sub.ac_contact_id = contact_id  # lets the handler act without an address (minimized)
    if not _waiting(OutboxKind.AC_UNSUBSCRIBE, sub.id):
        db.session.add(OutboxItem.pending(OutboxKind.AC_UNSUBSCRIBE, subscription_id=sub.id))


def _queue_subscribe(sub: Subscription, email: str | None, contact_id: str | None,
                     dry_run: bool) -> Finding | None:
    if _waiting(OutboxKind.AC_SUBSCRIBE, sub.id, (OutboxStatus.PENDING, OutboxStatus.DEAD)):
        return None  # on its way (or a dead letter, already visible to operators)
    if not dry_run:
        db.session.add(OutboxItem.pending(OutboxKind.AC_SUBSCRIBE, subscription_id=sub.id))
    return Finding(SUBSCRIBE_QUEUED, email or sub.email, contact_id, sub.id)


def _record_withdrawal(subscription_id: int, contact_id: str, membership: dict[str, Any]) -> None:
    """Withdraw in its own transaction, under the row lock, if still confirmed."""
    db.session.commit()
    sub = db.session.get(Subscription, subscription_id, with_for_update=True,
                         populate_existing=True)
    if sub is None or sub.status != S.CONFIRMED:
        db.session.rollback()
        return
    at, note = sync.event_time(sync.parse_ac_time(membership.get("udate")), sub, utcnow())
    details: dict[str, Any] = {"via": "reconcile", "ac_contact_id": contact_id, **note}
    if membership.get("udate"):
        details["reported_at"] = str(membership["udate"])
    subscriptions.withdraw(sub, origin="activecampaign", at=at, details=details)
    db.session.commit()


def _missing_there(list_id: int, seen: set[str], dry_run: bool) -> Iterator[Finding]:
    """Confirmed subscriptions whose address ActiveCampaign's list does not have at all."""
    last_id = 0
    while True:
        batch = db.session.scalars(
            select(Subscription)
            .where(Subscription.list_id == list_id, Subscription.status == S.CONFIRMED,
                   Subscription.id > last_id)
            .order_by(Subscription.id).limit(500)
        ).all()
        if not batch:
            return
        for sub in batch:
            if sub.email_hash not in seen:
                finding = _queue_subscribe(sub, sub.email, None, dry_run)
                if finding is not None:
                    yield finding
        last_id = batch[-1].id


def interval() -> timedelta:
    """How often the workers reconcile (OPTIN_AC_RECONCILE_MINUTES; 0 = never)."""
    minutes = current_settings().ac_reconcile_minutes
    return timedelta(minutes=minutes) if minutes else timedelta(days=36500)  # 0 = off


def reconcile_all() -> dict[str, dict[str, int]]:
    """The worker's periodic run over every list mapped to ActiveCampaign (counts only in logs)."""
    settings = current_settings()
    if not settings.ac_reconcile_minutes or settings.ac_dry_run:
        return {}
    results: dict[str, dict[str, int]] = {}
    for mailing_list in db.session.scalars(
        select(MailingList).where(MailingList.ac_list_id.is_not(None)).order_by(MailingList.id)
    ).all():
        report = reconcile(mailing_list)
        results[mailing_list.slug] = report.counts()
        log.info("reconciled list %s with ActiveCampaign: %s members, %s",
                 mailing_list.slug, report.members,
                 {k: v for k, v in report.counts().items() if v} or "no drift")
    return results
