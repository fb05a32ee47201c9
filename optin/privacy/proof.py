"""The proof of consent for one address on one list, and its consent receipt.

What a proof holds follows DESIGN.md (BGH I ZR 164/09: the consent fully
documented and printable at any time; EDPB Guidelines 05/2020 §108: how and
when consent was given and a copy of what was presented). It is assembled
from the ledger, the stored consent texts and the mail templates, for every
consent cycle of the address on the list (newest first), each with the
verification of its hash chain. The same record renders as JSON, a printable
HTML page, plain text, and a Kantara Consent Receipt v1.1.
"""

from __future__ import annotations

import textwrap
import uuid
import weakref
from datetime import datetime
from typing import Any, NotRequired, TypedDict

from flask import current_app
from jinja2 import TemplateNotFound

from optin.config import current_settings
from optin.consent import checkpoints, ledger, lists, mailcopies, signups
from optin.consent.lists import UnknownList
from optin.extensions import db
from optin.models import (
    ConsentEvent,
    ConsentText,
    EventKind,
    MailingList,
    Signup,
    Subscription,
    utcnow,
)
from optin.privacy import audit, document
from optin.privacy.import_rows import imported_evidence
from optin.privacy.rights import identify, retention_note, subscriptions_of
from optin.privacy.wording import CHANNELS, EVENTS, LABELS, TEXT, WITHDRAWN_VIA, ProofLocale
from optin.schemas import ProofSchema

MAIL_SENT = ("confirmation_sent", "welcome_sent", "goodbye_sent")
SIGNUPS = ("signup_requested", "signup_repeated")
RECEIPT_VERSION = "KI-CR-v1.1.0"
COLLECTION_METHOD = (
    "Web form signup, confirmed by the address owner through a personal link mailed to the "
    "address (double opt-in)"
)


__all__ = ["NoConsent", "Proof", "Receipt", "UnknownList", "build", "covering_checkpoint",
           "receipt", "render_text"]


class NoConsent(LookupError):
    """Nothing recorded for the address on the list (or nothing confirmed, for a receipt)."""


# The proof as the domain holds it: times are datetimes, events and texts the rows
# themselves. ProofSchema and ReceiptSchema (optin.schemas) write them out.


class TemplateSource(TypedDict):
    subject: str
    text: str
    layouts: dict[str, str]  # the bases the mail extends, by template name


class MailCopyEvidence(TypedDict):
    """The kept copy of a mail as the proof shows it, and its check against the ledger."""

    parts: dict[str, str | None]  # subject, text, html as shown
    with_names: bool  # the names it quoted are still in (not yet withdrawn)
    sha256: dict[str, str | None]  # of each part as shown
    recorded_sha256: dict[str, str] | None  # what the ledger recorded for that form
    matches: bool  # every part shown hashes as recorded
    token_sha256: list[str]  # of the link token each TOKEN marker stands for
    names_removed: list[str]  # names replaced by markers (deleted at withdrawal)
    markers: dict[str, str]


class MailEvidence(TypedDict):
    kind: str
    sent_at: datetime
    message_id: str | None
    subject: str | None
    template: str | None
    template_sha256: str | None
    text_sha256: str | None
    html_sha256: str | None
    signup_seq: NotRequired[int | None]  # a confirmation mail: the signup it was sent for
    copy: NotRequired[MailCopyEvidence | None]  # the mail as it left (mails since 0005)
    # A confirmation mail's template, checked against the files of today:
    matches_current_template: NotRequired[bool]
    template_source: NotRequired[TemplateSource | None]
    reconstructed_text: NotRequired[str | None]


class SignupEvidence(TypedDict):
    """One signup request: its own event's evidence next to its own values."""

    seq: int
    kind: str
    at: datetime
    ip: str | None
    user_agent: str | None
    source_url: str | None
    source_url_from: str | None  # "referer": taken from the request, the form sent none
    privacy_policy_url: str | None  # the list's privacy policy at the time of the signup
    locale: str | None
    entered: dict[str, Any]
    entered_sha256: str | None
    fields_entered: list[str] | None
    consent_text: ConsentText | None
    consent_text_id: int | None
    action: str | None
    confirmed: bool
    mails: list[str]  # Message-IDs of the confirmation mails sent for this signup
    redacted_at: datetime | None


class ConfirmationEvidence(TypedDict):
    at: datetime
    ip: str | None
    user_agent: str | None
    signup_seq: int | None  # the signup this confirmation confirmed
    locale: str | None
    entered_sha256: str | None
    redacted_at: datetime | None


class Withdrawal(TypedDict):
    at: datetime
    channel: str | None


class LedgerCheck(TypedDict):
    ok: bool
    events: int
    head: str | None
    problems: list[str]


class ConsentCycle(TypedDict):
    subscription_id: int
    status: str
    address: str | None
    retention: str
    retain_until: datetime | None
    consent_text: ConsentText | None
    signups: list[SignupEvidence]
    signup: SignupEvidence | None
    repeated_signups: list[SignupEvidence]
    mails: list[MailEvidence]
    confirmation: ConfirmationEvidence | None
    withdrawal: Withdrawal | None
    erased_at: datetime | None
    minimized_at: datetime | None
    later_events: list[ConsentEvent]
    events: list[ConsentEvent]
    ledger: LedgerCheck
    checkpoint: dict[str, Any] | None  # checkpoints.covering: the signed anchor of its events
    imported: dict[str, Any] | None  # evidence brought from another system (optin import)


class ProofList(TypedDict):
    slug: str
    name: str
    controller: str | None
    privacy_policy_url: str | None
    purpose: str
    purpose_set: bool  # the list names its purpose (else the sentence above, by default)
    activecampaign_list_id: int | None


class Controller(TypedDict):
    name: str | None  # OPTIN_CONTROLLER_NAME (development: the list's or the brand)
    address: list[str]  # OPTIN_CONTROLLER_ADDRESS, by line


class Proof(TypedDict):
    """The proof of consent for one address on one list (``ProofSchema``)."""

    title: str
    document_id: str  # this document's, also in its ``proof_printed`` ledger events
    generated_at: datetime
    generated_by: str
    controller: Controller
    address: str
    address_hash: str
    list: ProofList
    consents: list[ConsentCycle]
    ledger_ok: bool
    checkpoint: dict[str, Any] | None  # covering_checkpoint: the newest covering them
    legal_notes: list[str]


class DoubleOptIn(TypedDict):
    status: str
    consentText: ConsentText | dict[str, Any]  # noqa: N815 (the receipt's own field names)
    signup: SignupEvidence | None
    confirmationMails: list[MailEvidence]  # noqa: N815
    confirmation: ConfirmationEvidence
    withdrawal: Withdrawal | None
    ledger: LedgerCheck


class Receipt(TypedDict):
    """A Kantara Consent Receipt v1.1 with the DOI evidence (``ReceiptSchema``)."""

    version: str
    jurisdiction: str
    consentTimestamp: int  # noqa: N815
    collectionMethod: str  # noqa: N815
    consentReceiptID: str  # noqa: N815
    language: str | None
    piiPrincipalId: str  # noqa: N815
    piiControllers: list[dict[str, Any]]  # noqa: N815
    policyUrl: str | None  # noqa: N815
    services: list[dict[str, Any]]
    sensitive: bool
    spiCat: list[str]  # noqa: N815
    doubleOptIn: DoubleOptIn  # noqa: N815


def _first(events: list[ConsentEvent], kind: str) -> ConsentEvent | None:
    return next((e for e in events if e.kind == kind), None)


#: Template versions by mail templates and name: hashing a template's sources parses each
#: of them (75 ms a proof, the most of a proof's build in an audit export); kept while the
#: loader says the files are unchanged, as the mailer's own cache does.
#: (The mailer sits in the delivery layer above this one: known here by what it does.)
_VERSIONS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _version(templates: Any, template: str) -> Any:
    known = _VERSIONS.setdefault(templates, {})
    version = known.get(template)
    if version is None or not all(check() for check in version.uptodate):
        version = known[template] = templates.version(template)
    return version


class _TemplateCheck(TypedDict):
    matches_current_template: bool
    template_source: TemplateSource | None


def _template_source(template: str, recorded_sha256: str | None) -> _TemplateCheck:
    """Does the named mail template still hash as recorded? If so, its source.

    The hash covers every source the mail is rendered from: its subject, text
    and HTML templates and the bases they extend (``MailTemplates.version``,
    the same function that made the recorded hash); a match proves these files
    are the ones the mail was rendered from. After a template change the hash
    still identifies the version in version control.
    """
    try:
        version = _version(current_app.extensions["optin.mail_templates"], template)
    except TemplateNotFound:
        return {"matches_current_template": False, "template_source": None}
    matches = recorded_sha256 is not None and version.sha256 == recorded_sha256
    parts = {f"{template}.subject.txt", f"{template}.txt", f"{template}.html"}
    return {
        "matches_current_template": matches,
        "template_source": {
            "subject": version.sources[f"{template}.subject.txt"],
            "text": version.sources[f"{template}.txt"],
            "layouts": {name: source for name, source in version.sources.items()
                       if name not in parts},
        } if matches else None,
    }


LINK_PLACEHOLDER = "[personal confirmation link]"


def _reconstruct_confirmation(sub: Subscription, template: str, entered: dict[str, Any],
                              text: ConsentText | None) -> str | None:
    """The confirmation mail's text as the recipient read it, but for the link.

    Rendered from the template version the ledger names (only called when the
    current files still hash as recorded) with the values of the signup; the
    personal link is replaced by a placeholder, so the result differs from the
    recorded body hash exactly by the link.
    """
    name, _, locale = template.partition(".")
    try:
        return current_app.extensions["optin.mail_templates"].render(name, locale, {
            "list_name": sub.mailing_list.name,
            "first_name": entered.get("first_name"),
            "consent_text": text.text if text else None,
            "brand": current_app.extensions["optin.brand"],
            "locale": locale,
            "confirm_url": LINK_PLACEHOLDER,
            "ttl_hours": current_settings().confirm_ttl_hours,
        }).text
    except Exception:  # a template needing more than we know: show no reconstruction
        return None


def _copy(event: ConsentEvent, kept: mailcopies.Kept | None) -> MailCopyEvidence | None:
    """The kept copy of the mail, checked against the hashes its ledger event recorded.

    While the names are kept the copy is shown with them and compared with
    ``copy.with_names``; after the withdrawal without them, against
    ``copy.without_names``. Either hash was recorded when the mail left.
    """
    if kept is None:
        return None
    recorded = (event.details or {}).get("copy") or {}
    with_names = kept.names is not None
    shown = kept.shown()
    hashes = {p: mailcopies.sha256(t) if t is not None else None for p, t in shown.items()}
    expected: dict[str, str] | None = recorded.get("with_names" if with_names else "without_names")
    matches = bool(expected) and all((expected or {}).get(p) == h for p, h in hashes.items())
    return {
        "parts": shown,
        "with_names": with_names,
        "sha256": hashes,
        "recorded_sha256": expected,
        "matches": matches,
        "token_sha256": recorded.get("token_sha256") or [],
        "names_removed": [] if with_names else recorded.get("names_marked") or [],
        "markers": {"token": mailcopies.TOKEN, "bracket": mailcopies.BRACKET,
                    **mailcopies.NAMES},
    }


def _mail(event: ConsentEvent, records: dict[int, Signup],
          copies: dict[str, mailcopies.Kept] | None = None) -> MailEvidence:
    details = event.details or {}
    record: MailEvidence = {
        "kind": event.kind,
        "sent_at": event.at,
        "message_id": details.get("message_id"),
        "subject": details.get("subject"),
        "template": details.get("template"),
        "template_sha256": details.get("template_sha256"),
        "text_sha256": details.get("text_sha256"),
        "html_sha256": details.get("html_sha256"),
    }
    template = record["template"]
    if event.kind == "confirmation_sent":
        record["signup_seq"] = details.get("signup_seq")
    if event.kind == "confirmation_sent":
        record["copy"] = _copy(event, (copies or {}).get(record["message_id"] or ""))
    if event.kind == "confirmation_sent" and template:
        check = _template_source(template, record["template_sha256"])
        record.update(check)
        record["reconstructed_text"] = None
        if check["matches_current_template"] and record["copy"] is None:
            # A mail sent before copies were kept: rendered again, which is not the mail
            # as sent (after a withdrawal without the name it quoted), and says so.
            sub = event.subscription
            signup = records.get(details.get("signup_seq", -1))
            # Names are gone after a withdrawal.
            entered = {"first_name": (signup or sub).first_name}
            if signup is not None:
                text = signup.consent_text
            else:  # a mail sent before mails named their signup
                shown = [e for e in sub.events if e.seq < event.seq and e.consent_text_id
                         and e.kind in SIGNUPS]
                text = shown[-1].consent_text if shown else sub.consent_text
            record["reconstructed_text"] = _reconstruct_confirmation(sub, template, entered, text)
    return record


def _text(text_id: int | None) -> ConsentText | None:
    return db.session.get(ConsentText, text_id) if text_id else None


def _confirmed_seq(confirmed: ConsentEvent | None, records: list[Signup]) -> int | None:
    """The seq of the signup a confirmation confirmed."""
    if confirmed is None:
        return None
    details = confirmed.details or {}
    if "signup_seq" in details:
        return details["signup_seq"]
    # Confirmed before confirmations named their signup: the values it confirmed are
    # those migration 0003 recorded for it, the subscription's first record.
    return records[0].seq if records else None


def _signup(event: ConsentEvent, record: Signup | None, confirmed_seq: int | None,
            mails: list[MailEvidence]) -> SignupEvidence:
    """A signup request as proof: its event's evidence and the values it entered."""
    details = event.details or {}
    values = {"first_name": record.first_name, "last_name": record.last_name,
              "fields": record.fields} if record else {}
    return {
        "seq": event.seq,
        "kind": event.kind,
        "at": event.at,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "source_url": details.get("source_url"),
        "source_url_from": details.get("source_url_from") or ("form" if details.get("source_url")
                                                               else None),
        "privacy_policy_url": details.get("privacy_policy_url"),
        "locale": details.get("locale") or (record.locale if record else None),
        # Names and fields are kept until withdrawal; the ledger keeps their digest.
        # The address as typed, when the stored (mailable) form differs (an IDN domain).
        "entered": {k: v for k, v in {"email": details.get("email_entered") or details.get("email"),
                                      **values}.items() if v},
        "entered_sha256": details.get("entered_sha256"),
        "fields_entered": details.get("fields_entered"),
        "consent_text": _text(event.consent_text_id),
        "consent_text_id": event.consent_text_id,
        "action": details.get("action"),
        "confirmed": confirmed_seq == event.seq,
        "mails": [m["message_id"] for m in mails
                  if m.get("signup_seq") == event.seq and m["message_id"]],
        "redacted_at": event.redacted_at,
    }


def _cycle(sub: Subscription) -> ConsentCycle:
    """One consent cycle (one subscription row) as proof: every signup request with its
    own evidence and values, and which of them the confirmation confirmed."""
    events = list(sub.events)
    records = signups.of(sub.id)
    by_seq = {r.seq: r for r in records}
    confirmed = _first(events, "confirmed")
    confirmed_seq = _confirmed_seq(confirmed, records)
    shown = (confirmed.consent_text_id if confirmed else None) or sub.consent_text_id
    check = ledger.verify(db.session(), [sub.id])
    anchor = checkpoints.covering(sub.id)
    problems = check.problems + (checkpoints.anchor_problems(
        anchor, {e.seq: e.chain_hash for e in events}) if anchor else [])
    copies = mailcopies.of(sub.id)
    mails = [_mail(e, by_seq, copies) for e in events if e.kind in MAIL_SENT]
    requests = [_signup(e, by_seq.get(e.seq), confirmed_seq, mails)
                for e in events if e.kind in SIGNUPS]
    confirmed_details = (confirmed.details or {}) if confirmed else {}
    return {
        "subscription_id": sub.id,
        "status": sub.status,
        "address": sub.email,
        "retention": retention_note(sub),
        "retain_until": sub.retain_until,
        "consent_text": _text(shown),
        "signups": requests,
        "signup": next((r for r in requests if r["kind"] == "signup_requested"), None),
        "repeated_signups": [r for r in requests if r["kind"] == "signup_repeated"],
        "mails": mails,
        "confirmation": None if confirmed is None else {
            "at": confirmed.at,
            "ip": confirmed.ip,
            "user_agent": confirmed.user_agent,
            "signup_seq": confirmed_seq,
            "locale": confirmed_details.get("locale"),
            "entered_sha256": confirmed_details.get("entered_sha256"),
            "redacted_at": confirmed.redacted_at,
        },
        "withdrawal": {"at": sub.withdrawn_at, "channel": sub.withdrawal_origin}
        if sub.withdrawn_at else None,
        "erased_at": sub.erased_at,
        "minimized_at": sub.minimized_at,
        "later_events": [e for e in events if confirmed is not None and e.seq > confirmed.seq],
        "events": events,
        "imported": imported_evidence(events),
        "ledger": {
            "ok": not problems,
            "events": check.events,
            "head": sub.ledger_head,
            "problems": problems,
        },
        "checkpoint": anchor,
    }


def _list_info(mailing_list: MailingList) -> ProofList:
    settings = current_settings()
    return {
        "slug": mailing_list.slug,
        "name": mailing_list.name,
        "controller": mailing_list.controller or settings.brand["name"],
        "privacy_policy_url": mailing_list.privacy_policy_url,
        "purpose": mailing_list.purpose or f"Newsletter “{mailing_list.name}” by email",
        "purpose_set": bool(mailing_list.purpose),
        "activecampaign_list_id": mailing_list.ac_list_id,
    }


def covering_checkpoint(cycles: list[ConsentCycle]) -> dict[str, Any] | None:
    """The newest signed checkpoint among those covering the cycles' events (each cycle
    shows its own, with the Merkle path from its chain head); None until one is published.
    The document shows it under "Checkpoint" (``#checkpoint``), the JSON as ``checkpoint``,
    the audit export's manifest under ``checkpoints``."""
    anchors = [c["checkpoint"] for c in cycles if c["checkpoint"]]
    if not anchors:
        return None
    newest = max(anchors, key=lambda anchor: anchor["checkpoint"])
    return {key: newest[key] for key in ("checkpoint", "at", "root", "key_id", "public_key")}


def _controller(mailing_list: MailingList) -> Controller:
    settings = current_settings()
    return {"name": settings.controller_name or mailing_list.controller or settings.brand["name"],
            "address": settings.controller_address_lines}


def build(raw_email: str, list_slug: str, actor: str, *, purpose: str = "proof",
          document_id: str | None = None) -> Proof:
    """The proof for the address on the list; audited, and noted on each cycle's ledger
    with the document's id (a new one unless given).

    Raises :class:`UnknownList`, :class:`NoConsent` or ``rights.InvalidAddress``.
    """
    email, digest = identify(raw_email)
    mailing_list = lists.require_list(list_slug)
    document_id = document_id or str(uuid.uuid4())
    subs = subscriptions_of(digest, list_id=mailing_list.id, lock=True)
    audit.record(actor, "proof", email_hash=digest,
                 details={"list": list_slug, "format": purpose, "subscriptions": len(subs),
                          "document_id": document_id})
    audit.note_on_ledger(subs, EventKind.PROOF_PRINTED, actor, purpose=purpose,
                         document_id=document_id)
    db.session.commit()
    if not subs:
        raise NoConsent(f"nothing is recorded for this address on list {list_slug!r}")
    subs = subscriptions_of(digest, list_id=mailing_list.id)
    cycles = [_cycle(s) for s in reversed(subs)]
    return {
        "title": ("Proof of consent (evidence imported from another system)"
                  if cycles and all(c["imported"] for c in cycles)
                  else "Proof of consent (double opt-in)"),
        "document_id": document_id,
        "generated_at": utcnow(),
        "generated_by": actor,
        "controller": _controller(mailing_list),
        "address": email,
        "address_hash": digest,
        "list": _list_info(mailing_list),
        "consents": cycles,
        "ledger_ok": all(c["ledger"]["ok"] for c in cycles),
        "checkpoint": covering_checkpoint(cycles),
        "legal_notes": [
            "BGH, judgment of 10 Feb 2011, I ZR 164/09: the advertiser must document each "
            "consent fully and be able to print it at any time.",
            "EDPB Guidelines 05/2020, §108: records show how and when consent was given and "
            "what information was presented.",
            "Times are UTC. Each event is hash-chained (SHA-256) per subscription; the "
            "verification result covers every event listed.",
            "Mail body hashes are SHA-256 of the rendered text and HTML parts (UTF-8, LF line "
            "endings; mail transport carries them as CRLF). The template hash covers the "
            "subject, text and HTML template sources and the layouts they extend.",
        ],
    }


def receipt(proof: Proof) -> Receipt:
    """The newest confirmed consent as a Kantara Consent Receipt v1.1, plus DOI evidence.

    The Kantara fields come first and keep their names; ``doubleOptIn`` is the
    extension carrying the evidence. Raises :class:`NoConsent` if no cycle was
    ever confirmed.
    """
    found = next(((c, c["confirmation"]) for c in proof["consents"] if c["confirmation"]), None)
    if found is None:
        raise NoConsent("this address never confirmed a subscription to this list")
    cycle, confirmation = found
    info = proof["list"]
    settings = current_settings()
    third_party = info["activecampaign_list_id"] is not None
    text = cycle["consent_text"]
    signup = next((s for s in cycle["signups"] if s["confirmed"]), cycle["signup"])
    entered = (signup["fields_entered"] if signup else None) or []
    pii = ["email address"] + [f"{k.replace('_', ' ')} (as entered)" for k in entered]
    return {
        "version": RECEIPT_VERSION,
        "jurisdiction": "DE",
        "consentTimestamp": int(confirmation["at"].timestamp()),
        "collectionMethod": COLLECTION_METHOD,
        "consentReceiptID": str(uuid.uuid5(
            uuid.NAMESPACE_URL, f"{settings.base_url}/consent/{cycle['subscription_id']}")),
        "language": text.locale if text else None,
        "piiPrincipalId": proof["address"],
        "piiControllers": [{
            "piiController": info["controller"],
            "contact": info["controller"],
            "email": settings.mail_from,
            "piiControllerUrl": settings.base_url,
            "onBehalf": False,
        }],
        "policyUrl": info["privacy_policy_url"],
        "services": [{
            "service": info["name"],
            "purposes": [{
                "purpose": info["purpose"],
                "purposeCategory": ["Marketing (direct marketing by email)"],
                "consentType": "EXPLICIT",
                "piiCategory": pii,
                "primaryPurpose": True,
                "termination": "Until withdrawn (unsubscribe link in every mail, or on request); "
                               "the proof is then kept until the limitation period ends.",
                "thirdPartyDisclosure": third_party,
                **({"thirdPartyName": "ActiveCampaign (processor)"} if third_party else {}),
            }],
        }],
        "sensitive": False,
        "spiCat": [],
        # ReceiptSchema writes out the parts of these records a receipt carries.
        "doubleOptIn": {
            "status": cycle["status"],
            "consentText": text or {},
            "signup": signup,
            "confirmationMails": [m for m in cycle["mails"] if m["kind"] == "confirmation_sent"],
            "confirmation": confirmation,
            "withdrawal": cycle["withdrawal"],
            "ledger": cycle["ledger"],
        },
    }


def _retention_words(cycle: dict[str, Any], locale: ProofLocale, zone: str) -> str:
    """How long the cycle is kept, in the reader's language (as the document says it)."""
    labels = LABELS[locale]
    if cycle["status"] == "confirmed":
        return labels["keep_confirmed"]
    if cycle["status"] == "minimized":
        return labels["keep_minimized"].format(date=document.day(cycle["minimized_at"], locale, zone))
    # An imported withdrawal is kept as proof whatever the source said of a confirmation
    # (imports.py: retain_until is the limitation period's end), never "before confirmation".
    key = ("keep_pending" if cycle["status"] == "pending" else
           "keep_withdrawn" if cycle["confirmation"] or cycle.get("imported")
           else "keep_withdrawn_pending")
    return labels[key].format(date=document.day(cycle["retain_until"], locale, zone))


def _imported_words(imported: dict[str, Any], locale: ProofLocale, zone: str) -> str:
    labels = LABELS[locale]
    evidence = imported["evidence"]

    def ip(role: str) -> str:
        return labels["imp_from"].format(ip=evidence[role]) if evidence.get(role) else ""

    return labels["imp_summary"].format(
        source=labels.get(f"imp_source_{imported['source']}", imported["source"]),
        date=document.day(imported["imported_at"], locale, zone),
        signup=evidence.get("signup_time") or labels["imp_not_given"], signup_ip=ip("signup_ip"),
        confirm=evidence.get("confirm_time") or labels["imp_not_given"], confirm_ip=ip("confirm_ip"))


def render_text(record: Proof, locale: ProofLocale = "en") -> str:
    """Plain text for the terminal (``optin proof``), in German or English; the JSON has
    everything."""
    proof = ProofSchema().dump(record)
    words, labels = TEXT[locale], LABELS[locale]
    zone = current_settings().proof_timezone
    out: list[str] = []
    info = proof["list"]

    def line(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            out.append(f"  {label:<22} {value}")

    imported = bool(proof["consents"]) and all(c.get("imported") for c in proof["consents"])
    out += [words["title_imported" if imported else "title"],
            words["address"].format(address=proof["address"], hash=proof["address_hash"]),
            words["list"].format(slug=info["slug"], name=info["name"],
                                 controller=info["controller"]),
            words["generated"].format(at=proof["generated_at"], by=proof["generated_by"]),
            words["ledger"].format(verdict=words["ledger_ok" if proof["ledger_ok"]
                                                 else "ledger_failed"]), ""]
    for n, c in enumerate(proof["consents"], 1):
        out.append(words["cycle"].format(n=n, id=c["subscription_id"],
                                         status=labels.get(f"status_{c['status']}", c["status"])))
        line(words["retention"], _retention_words(c, locale, zone))
        if c.get("imported"):
            out.extend(textwrap.wrap(_imported_words(c["imported"], locale, zone), 76,
                                     initial_indent="  ", subsequent_indent="  "))
            line(words["imported_by"], words["imported_from"].format(
                operator=c["imported"]["operator"], file=c["imported"]["file"],
                sha=c["imported"]["file_sha256"], row=c["imported"]["row"]))
            line(words["missing"], ", ".join(c["imported"]["missing"]))
        text = c["consent_text"]
        if text:
            line(words["consent_text"], f"v{text['version']} {text['locale']} sha256 "
                 f"{text['sha256']}{'' if text['sha256_verified'] else words['text_bad']}")
            out.extend(textwrap.wrap(text["text"], 76, initial_indent="    > ",
                                     subsequent_indent="    > "))
        for s in c["signups"]:
            shown = s["consent_text"]
            line(words["signup"].format(seq=s["seq"]), f"{s['at']}  IP {s['ip']}  UA "
                 f"{s['user_agent']}{words['confirmed_mark'] if s['confirmed'] else ''}")
            line(words["source_url"], s["source_url"])
            line(words["shown_text"], shown and f"v{shown['version']} {shown['locale']}")
            line(words["entered"], s["entered"])
            line(words["outcome"], s["action"])
        for m in c["mails"]:
            if m["kind"] == "confirmation_sent":
                line(words["mail"], f"{m['sent_at']}  {m['message_id']}" + (
                    words["for_signup"].format(seq=m["signup_seq"]) if m.get("signup_seq") else ""))
                line(words["template"], f"{m['template']} sha256 {m['template_sha256']}")
                line(words["subject"], m["subject"])
                line(words["text_sha"], m["text_sha256"])
        if c["confirmation"]:
            k = c["confirmation"]
            line(words["confirmed"], f"{k['at']}  IP {k['ip']}  UA {k['user_agent']}" + (
                words["confirmed_signup"].format(seq=k["signup_seq"]) if k.get("signup_seq")
                else ""))
        if c["withdrawal"]:
            channel = c["withdrawal"]["channel"]
            line(words["withdrawn"], f"{c['withdrawal']['at']} " + (
                WITHDRAWN_VIA[locale].get(channel) or f"{words['via']} {channel}"))
        line(words["erased"], c["erased_at"])
        line(words["minimized"], c["minimized_at"])
        out.append(words["events"])
        for e in c["events"]:
            kind = EVENTS[locale].get(e["kind"], e["kind"])
            channel = CHANNELS[locale].get(e["origin"], e["origin"])
            out.append(f"    #{e['seq']:<3} {e['at']}  {kind:<26} {channel}"
                       f"{words['redacted'] if e['redacted_at'] else ''}")
        verdict = words["intact"] if c["ledger"]["ok"] else "; ".join(c["ledger"]["problems"])
        line(words["chain"], words["chain_verdict"].format(n=c["ledger"]["events"], verdict=verdict))
        anchor = c.get("checkpoint")
        line(words["checkpoint"], anchor and words["checkpoint_line"].format(
            n=anchor["checkpoint"], at=anchor["at"], through=anchor["covers_events_through"],
            root=anchor["root"], key=anchor["key_id"]))
        out.append("")
    return "\n".join(out)
