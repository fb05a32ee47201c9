"""Counts of consent for the operator's overview: subscriptions per list and status,
and suppressed addresses. Read-only; nothing here is personal data."""

from __future__ import annotations

from sqlalchemy import func, select

from optin.extensions import db
from optin.models import MailingList, Subscription, Suppression


def subscriptions_per_list() -> dict[str, dict[str, int]]:
    """``{list slug: {status: count}}``; every list appears, one without subscriptions as ``{}``."""
    per_list: dict[str, dict[str, int]] = {
        slug: {} for slug in db.session.scalars(select(MailingList.slug).order_by(MailingList.slug))
    }
    rows = db.session.execute(
        select(MailingList.slug, Subscription.status, func.count())
        .join(Subscription, Subscription.list_id == MailingList.id)
        .group_by(MailingList.slug, Subscription.status)
    ).all()
    for slug, status, count in rows:
        per_list[slug][status] = count
    return per_list


def suppressions() -> int:
    """How many (address, list) pairs are suppressed: withdrawn, never to be re-added."""
    return db.session.scalar(select(func.count()).select_from(Suppression)) or 0


def consents_by_origin(slug: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """``{list slug: {"native": {status: count}, "imported": {status: count}}}``: consents
    recorded here apart from those brought in by ``optin import`` (``imported_from``)."""
    query = (select(MailingList.slug, Subscription.imported_from.is_not(None), Subscription.status,
                    func.count())
             .join(Subscription, Subscription.list_id == MailingList.id)
             .group_by(MailingList.slug, Subscription.imported_from.is_not(None),
                       Subscription.status))
    names = select(MailingList.slug).order_by(MailingList.slug)
    if slug is not None:
        query, names = query.where(MailingList.slug == slug), names.where(MailingList.slug == slug)
    per_list: dict[str, dict[str, dict[str, int]]] = {
        name: {"native": {}, "imported": {}} for name in db.session.scalars(names)}
    for name, imported, status, count in db.session.execute(query).all():
        per_list[name]["imported" if imported else "native"][status] = count
    return per_list
