"""``optin export``: a list in the generic import's shape, with optin's own evidence.

So an operator can move away from optin as easily as to it: every
subscription that still holds its address (confirmed, or withdrawn and kept
as proof) is one row with the generic CSV's columns (``privacy.import_files``)
filled from what optin recorded, or, for an imported consent, with the
evidence exactly as the source gave it; then ``optin_…`` columns with what
only optin knows (user agents, where the record came from, the ledger head).
Pending signups are no consents and minimized records have no address: both
are left out. Read in id order in batches, the active subscriptions first (see
:func:`export_csv`); the export is audited.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from sqlalchemy import func, not_, select

from optin.extensions import db
from optin.models import ConsentEvent, ConsentText, EventKind, MailingList, Subscription, SubscriptionStatus
from optin.privacy import audit
from optin.privacy.import_files import CSV_COLUMNS, FIELD_PREFIX, spreadsheet_safe

S = SubscriptionStatus
OPTIN_COLUMNS = ("optin_recorded_by", "optin_subscription_id", "optin_signup_user_agent",
                 "optin_confirm_user_agent", "optin_withdrawal_channel", "optin_imported_at",
                 "optin_import_file_sha256", "optin_import_missing", "optin_ledger_head")
EXPORTED = (S.CONFIRMED, S.UNSUBSCRIBED)
READ_CHUNK = 1000
_EVIDENCE_KINDS = (EventKind.SIGNUP_REQUESTED, EventKind.CONFIRMED, EventKind.CONSENT_IMPORTED,
                   EventKind.BOUNCED)


@dataclass
class ExportSummary:
    rows: int = 0
    skipped: int = 0


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""


def _batches(list_id: int, status: str | None = None) -> Iterator[list[Subscription]]:
    last = 0
    while True:
        query = select(Subscription).where(Subscription.list_id == list_id, Subscription.id > last)
        if status is not None:
            query = query.where(Subscription.status == status, Subscription.email.is_not(None))
        subs = list(db.session.scalars(query.order_by(Subscription.id).limit(READ_CHUNK)))
        if not subs:
            return
        yield subs
        last = subs[-1].id
        db.session.expunge_all()


def _field_names(list_id: int) -> list[str]:
    names: set[str] = set()
    for subs in _batches(list_id):
        for sub in subs:
            names.update((sub.fields or {}).keys())
    return sorted(names)


def _row(sub: Subscription, events: dict[str, ConsentEvent], texts: dict[int, ConsentText],
         field_names: list[str]) -> dict[str, Any]:
    imported, signup, confirmed = (events.get(EventKind.CONSENT_IMPORTED),
                                   events.get(EventKind.SIGNUP_REQUESTED),
                                   events.get(EventKind.CONFIRMED))
    text = texts.get(sub.consent_text_id) if sub.consent_text_id else None
    status = ("subscribed" if sub.status == S.CONFIRMED
              else "cleaned" if EventKind.BOUNCED in events else "unsubscribed")
    row: dict[str, Any] = {
        "email": sub.email, "status": status, "locale": sub.locale,
        "first_name": sub.first_name or "", "last_name": sub.last_name or "",
        "source_url": sub.source_url or "",
        "consent_text": text.text if text else "", "consent_text_version": text.version if text else "",
        "withdrawn_time": _iso(sub.withdrawn_at),
        **{FIELD_PREFIX + name: (sub.fields or {}).get(name, "") for name in field_names},
        "optin_subscription_id": sub.id, "optin_ledger_head": sub.ledger_head or "",
        "optin_withdrawal_channel": sub.withdrawal_origin or "",
    }
    if imported is not None:
        details = imported.details or {}
        given = details.get("evidence") or {}
        for role in ("signup_time", "signup_ip", "confirm_time", "confirm_ip", "withdrawn_time",
                     "consent_text", "consent_text_version", "source_url"):
            if given.get(role):
                row[role] = given[role]  # exactly as the source gave it
        row.update(optin_recorded_by=f"import:{details.get('source')}",
                   optin_imported_at=_iso(imported.at),
                   optin_import_file_sha256=details.get("file_sha256") or "",
                   optin_import_missing=" ".join(details.get("missing") or []))
    else:
        row.update(optin_recorded_by="optin",
                   signup_time=_iso(signup.at) if signup else "",
                   signup_ip=(signup.ip or "") if signup else "",
                   optin_signup_user_agent=(signup.user_agent or "") if signup else "",
                   confirm_time=_iso(confirmed.at) if confirmed else "",
                   confirm_ip=(confirmed.ip or "") if confirmed else "",
                   optin_confirm_user_agent=(confirmed.user_agent or "") if confirmed else "")
    return row


def _with_evidence(subs: list[Subscription]) -> Iterator[tuple[Subscription, dict[str, ConsentEvent]]]:
    """Each subscription with the first event of each evidence kind, in one query."""
    by_sub: dict[int, dict[str, ConsentEvent]] = {}
    for event in db.session.scalars(
        select(ConsentEvent).where(ConsentEvent.subscription_id.in_([s.id for s in subs]),
                                   ConsentEvent.kind.in_(_EVIDENCE_KINDS))
        .order_by(ConsentEvent.subscription_id, ConsentEvent.seq)):
        if event.kind == EventKind.BOUNCED and "was" not in (event.details or {}):
            continue  # a bounce recorded without withdrawing ("was": the withdrawal's mark)
        by_sub.setdefault(event.subscription_id, {}).setdefault(event.kind, event)
    for sub in subs:
        yield sub, by_sub.get(sub.id, {})


def export_csv(mailing_list: MailingList, out: TextIO, *, actor: str) -> ExportSummary:
    """Write the list as CSV to ``out`` (see the module doc); audited."""
    list_id, slug = mailing_list.id, mailing_list.slug
    field_names = _field_names(list_id)
    columns = [*CSV_COLUMNS, *(FIELD_PREFIX + n for n in field_names), *OPTIN_COLUMNS]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", restval="")
    writer.writeheader()
    summary = ExportSummary()
    texts = {t.id: t for t in db.session.scalars(
        select(ConsentText).where(ConsentText.list_id == list_id))}
    # The active subscriptions first: an address that withdrew and consented again has a
    # withdrawn record and a newer confirmed one, and the import decides row by row. The
    # withdrawal first made the newer consent come back "suppressed" (lost); after it,
    # the older withdrawal is "already known" and the consent stays.
    for status in EXPORTED:
        for wanted in _batches(list_id, status):
            for sub, events in _with_evidence(wanted):
                row = _row(sub, events, texts, field_names)
                # Names, fields and user agents are what visitors typed or sent.
                writer.writerow({k: spreadsheet_safe(v) if isinstance(v, str) else v
                                 for k, v in row.items()})
                summary.rows += 1
    summary.skipped = db.session.scalar(
        select(func.count()).select_from(Subscription).where(
            Subscription.list_id == list_id,
            not_(Subscription.status.in_(EXPORTED) & Subscription.email.is_not(None)))) or 0
    audit.record(actor, "export", details={"list": slug, "format": "csv", "rows": summary.rows})
    db.session.commit()
    return summary
