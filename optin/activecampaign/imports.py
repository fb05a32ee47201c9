"""``optin import activecampaign``: the members of an ActiveCampaign list as imported consents.

For a company whose list lives in ActiveCampaign already: every member of the
list mapped to an optin list (``--ac-list-id``) that optin does not know
becomes an imported consent (``privacy.imports``), with the evidence
ActiveCampaign keeps on the list membership (``contactLists``, API v3):
``sdate`` (when the contact was subscribed to the list) and ``ip4Sub`` (the IP
it was subscribed from, an IPv4 address ActiveCampaign writes as a number, ``0``
for none), and for an unsubscribed or bounced member ``udate``, ``ip4Unsub`` and
``unsubreason``. ActiveCampaign records no confirmation of a double opt-in on
the membership, so ``confirm_time`` and ``confirm_ip`` are always marked missing.

Status 1 (active) imports a consent, 2 (unsubscribed) and 3 (bounced) a
withdrawal and suppression; 0 (unconfirmed) is rejected: there is no consent
to bring in. Members optin knows are decided like any import row (a newer
withdrawal wins, an import never overrides a withdrawal here).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from optin.activecampaign import sync
from optin.activecampaign.client import (
    STATUS_ACTIVE,
    STATUS_BOUNCED,
    STATUS_UNSUBSCRIBED,
    ActiveCampaignClient,
)
from optin.models import MailingList
from optin.privacy.import_rows import (
    CLEANED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    BadValue,
    ImportRow,
    Rejected,
    address,
)

STATUSES = {STATUS_ACTIVE: SUBSCRIBED, STATUS_UNSUBSCRIBED: UNSUBSCRIBED, STATUS_BOUNCED: CLEANED}
#: The membership's fields kept as evidence, as ActiveCampaign gives them.
EXTRA = ("id", "sourceid", "unsubreason", "ip4Unsub", "ip4_last", "status")


class NotMapped(ValueError):
    """The list has no ActiveCampaign list id, or ActiveCampaign is not configured."""


def _given(value: Any) -> str | None:
    """A membership value as the text ActiveCampaign gave; None for none (null, "", a zero
    date)."""
    if value is None:
        return None
    text = str(value)
    return None if not text.strip() or text.startswith("0000-00-00") else text


class ActiveCampaignList:
    """An ActiveCampaign list's members, page by page, as import rows."""

    source = "activecampaign"
    sha256 = None

    def __init__(self, mailing_list: MailingList, *, smtputf8: bool = False,
                 ac: ActiveCampaignClient | None = None) -> None:
        if mailing_list.ac_list_id is None:
            raise NotMapped(f"list {mailing_list.slug} has no ActiveCampaign list id")
        client = ac or sync.client()
        if client is None:
            raise NotMapped("ActiveCampaign is not configured (OPTIN_AC_URL unset): dry-run")
        self.ac, self.ac_list = client, mailing_list.ac_list_id
        self.smtputf8 = smtputf8
        self.label = f"ActiveCampaign list {self.ac_list}"

    def count(self) -> int:
        return self.ac.member_count(self.ac_list)

    def rows(self) -> Iterator[ImportRow | Rejected]:
        for n, contact in enumerate(self.ac.list_members(self.ac_list), 1):
            try:
                yield self._row(n, contact)
            except BadValue as exc:
                yield Rejected(self.label, n, str(exc))

    def _row(self, n: int, contact: dict[str, Any]) -> ImportRow:
        email, given = address(str(contact.get("email") or ""), smtputf8=self.smtputf8)
        status = STATUSES.get(contact.get("listStatus"))  # type: ignore[arg-type]
        if status is None:
            raise BadValue(f"status {contact.get('listStatus')} in ActiveCampaign "
                           "(unconfirmed): no consent to import")
        member = contact.get("contactList") or {}
        withdrawn = status != SUBSCRIBED
        evidence: dict[str, str | None] = {
            "signup_time": _given(member.get("sdate")),
            "signup_ip": _given(member.get("ip4Sub")) if _given(member.get("ip4Sub")) != "0"
            else None,
            "confirm_time": None, "confirm_ip": None,
            "withdrawn_time": _given(member.get("udate")) if withdrawn else None,
            "consent_text": None, "consent_text_version": None, "source_url": None,
        }
        columns = {"signup_time": "contactList.sdate", "signup_ip": "contactList.ip4Sub",
                   "withdrawn_time": "contactList.udate"}
        extra = {f"contactList.{k}": str(member[k]) for k in EXTRA if _given(member.get(k))}
        return ImportRow(
            member=self.label, line=n, row=n, email=email, email_given=given, status=status,
            evidence=evidence, columns=columns, extra=extra,
            first_name=_given(contact.get("firstName")), last_name=_given(contact.get("lastName")),
            ac_contact_id=str(contact["id"]) if contact.get("id") is not None else None)
