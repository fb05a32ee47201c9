"""One row of an import, as every source hands it to the importer (``privacy.imports``).

A source (a Mailchimp export, a generic CSV, ActiveCampaign's list) turns each of
its records into an :class:`ImportRow` (valid) or a :class:`Rejected` (line and
reason, nothing else kept). The evidence is kept exactly as the source gave it,
as strings under the source's own column names; ``interpreted`` says how optin
read it (times in UTC, IPs decoded) and ``missing`` names the evidence the
source lacked, so a proof never fills a gap with a guess.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from optin.consent.addresses import InvalidAddress, signup_address

#: What an import record can say about a consent, in the order a proof shows it.
EVIDENCE_ROLES = ("signup_time", "signup_ip", "confirm_time", "confirm_ip", "withdrawn_time",
                  "consent_text", "consent_text_version", "source_url")
TIME_ROLES = ("signup_time", "confirm_time", "withdrawn_time")
IP_ROLES = ("signup_ip", "confirm_ip")

#: The longest value a row may keep (evidence, names, fields; a consent text: MAX_TEXT).
#: The CSV reader takes fields up to 1 MB, and a zip of a few hundred KB can hold rows of
#: such "IP addresses": each stored in the ledger for good, a batch of them in memory.
MAX_VALUE, MAX_TEXT = 2_000, 20_000

SUBSCRIBED, UNSUBSCRIBED, CLEANED = "subscribed", "unsubscribed", "cleaned"
STATUSES = (SUBSCRIBED, UNSUBSCRIBED, CLEANED)


class BadValue(ValueError):
    """A value that makes its row rejected; the message is the report's reason."""


@dataclass
class Rejected:
    """A record that is not imported: where it is and why (nothing of its content)."""

    member: str
    line: int
    reason: str


@dataclass
class ImportRow:
    """A valid record: who, what the source says of them, and its evidence as given."""

    member: str  # the file it came from (inside a zip: the member's name)
    line: int  # physical line where the record starts (the header is line 1)
    row: int  # the record's number in its file (1 = the first after the header)
    email: str  # the stored (mailable) form
    status: str  # subscribed | unsubscribed | cleaned
    evidence: dict[str, str | None]  # role -> the value exactly as given (None: missing)
    columns: dict[str, str]  # role -> the source's column (or field) it came from
    extra: dict[str, str] = field(default_factory=dict)  # other evidence, as given
    email_given: str | None = None  # the address as given, when the stored form differs
    first_name: str | None = None
    last_name: str | None = None
    fields: dict[str, Any] | None = None
    locale: str | None = None
    ac_contact_id: str | None = None
    consent_text_id: int | None = None  # set by the importer from consent_text_version

    def __post_init__(self) -> None:
        self._check_lengths()
        self.interpreted: dict[str, str] = {}
        self.times: dict[str, datetime] = {}
        for role in TIME_ROLES:
            raw = self.evidence.get(role)
            if raw:
                when = parse_time(raw, self.columns.get(role, role))
                self.times[role] = when
                self.interpreted[role] = when.isoformat()
        for role in IP_ROLES:
            raw = self.evidence.get(role)
            decoded = decode_ip(raw) if raw else None
            if decoded is not None and decoded != raw:
                self.interpreted[role] = decoded

    def _check_lengths(self) -> None:
        """Raises BadValue for a value longer than a proof or a mail could use."""
        kept: list[tuple[str, Any]] = [
            *((self.columns.get(role, role), v) for role, v in self.evidence.items()),
            *self.extra.items(), ("first_name", self.first_name), ("last_name", self.last_name),
            *(("field " + str(k), v) for k, v in (self.fields or {}).items())]
        for column, value in kept:
            limit = MAX_TEXT if column == self.columns.get("consent_text") else MAX_VALUE
            if isinstance(value, str) and len(value) > limit:
                raise BadValue(f"{str(column)[:40]} holds {len(value)} characters, more than "
                               f"{limit}: not imported")

    @property
    def missing(self) -> list[str]:
        """The evidence roles the source gave no value for."""
        return [role for role in EVIDENCE_ROLES if not self.evidence.get(role)
                and (role != "withdrawn_time" or self.withdrawn)]

    @property
    def consent_at(self) -> datetime | None:
        """When the source says consent was given: its confirmation, else its opt-in."""
        return self.times.get("confirm_time") or self.times.get("signup_time")

    @property
    def withdrawn_at(self) -> datetime | None:
        return self.times.get("withdrawn_time")

    @property
    def withdrawn(self) -> bool:
        return self.status != SUBSCRIBED


def parse_time(raw: str, column: str) -> datetime:
    """An ISO 8601 date or date-time (``2024-05-02 08:41:07``, ``…T…+02:00``); without an
    offset it is UTC (Mailchimp's and ActiveCampaign's exports write UTC). Raises BadValue."""
    text = raw.strip()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadValue(f"unparseable date in {column}") from None
    if when.year < 1990:  # ActiveCampaign writes 0000-00-00 for none (refused above), or 1970
        raise BadValue(f"unparseable date in {column}")
    return when


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: An IPv4 address in the one form ``ipaddress`` writes it (no leading zeros): decoded, it
#: is itself, so the common case skips ``ipaddress``'s parse (which refuses leading zeros).
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def decode_ip(raw: str) -> str | None:
    """An IP address as given, or ActiveCampaign's IPv4 as a number (``3232235777``); None
    if it is none (``0``, empty) or not an address (kept as given, not interpreted)."""
    text = raw.strip()
    if not text or text == "0":
        return None
    if _CANONICAL_IPV4.fullmatch(text):
        return text
    try:
        if text.isdigit():
            return str(ipaddress.IPv4Address(int(text)))
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def address(raw: str, *, smtputf8: bool) -> tuple[str, str | None]:
    """The stored form of an imported address and, if it differs, the address as given.

    Held to the same rules as a signup (``signup_address``), so an imported address
    and a later signup of it are one subscription. Raises BadValue.
    """
    given = (raw or "").strip()
    if not given:
        raise BadValue("invalid address: empty")
    try:
        email = signup_address(given, smtputf8=smtputf8)
    except InvalidAddress as exc:
        raise BadValue(f"invalid address: {exc}") from None
    return email, (given if given != email else None)


def describe(row: ImportRow) -> dict[str, Any]:
    """What the ledger keeps of a row's source: where it is and its evidence as given."""
    return {"member": row.member, "row": row.row, "line": row.line,
            "status_in_source": row.status, "evidence": dict(row.evidence),
            "columns": dict(row.columns), "interpreted": dict(row.interpreted),
            "missing": row.missing, **({"extra": dict(row.extra)} if row.extra else {}),
            **({"email_given": row.email_given} if row.email_given else {}),
            **({"ac_contact_id": row.ac_contact_id} if row.ac_contact_id else {})}


SOURCE_NAMES = {"mailchimp": "Mailchimp", "csv": "a CSV file", "activecampaign": "ActiveCampaign"}


def imported_evidence(events: list[Any]) -> dict[str, Any] | None:
    """A consent cycle's imported evidence, for its proof: None unless it was imported.

    Says where it came from and shows the evidence exactly as the source gave it,
    each missing piece named, so it is never read as a double opt-in recorded here.
    """
    event = next((e for e in events if e.kind == "consent_imported"), None)
    if event is None:
        return None
    d = event.details or {}
    evidence = d.get("evidence") or {}
    name = SOURCE_NAMES.get(str(d.get("source")), d.get("source"))
    parts = [f"opt-in {evidence.get('signup_time') or 'not given'}"
             f"{' from ' + evidence['signup_ip'] if evidence.get('signup_ip') else ''}",
             f"confirmed {evidence.get('confirm_time') or 'not given'}"
             f"{' from ' + evidence['confirm_ip'] if evidence.get('confirm_ip') else ''}"]
    return {
        "source": d.get("source"),
        "summary": f"Evidence imported from {name} on {event.at:%Y-%m-%d %H:%M} UTC: "
                   + ", ".join(parts) + ". This consent was not recorded by this service "
                   "(no double opt-in made here); the evidence is as the source gave it.",
        "imported_at": event.at.isoformat(), "operator": d.get("operator"), "file": d.get("file"),
        "file_sha256": d.get("file_sha256"), "member": d.get("member"), "row": d.get("row"),
        "line": d.get("line"), "status_in_source": d.get("status_in_source"),
        "evidence": evidence, "columns": d.get("columns") or {},
        "interpreted": d.get("interpreted") or {}, "missing": d.get("missing") or [],
        "extra": d.get("extra") or {}, "redacted": event.redacted_at is not None,
    }
