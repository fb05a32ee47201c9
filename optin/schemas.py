"""Request and response schemas (marshmallow): shapes only, no business rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    pre_load,
    validate,
    validates_schema,
)
from marshmallow import fields as ma

MAX_FIELDS = 20
# Control characters, and lone surrogates: code points in U+D800–U+DFFF that JSON's
# "\ud800" escapes can make but no UTF-8 (so no database, hash or mail) can hold.
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def no_control_characters(value: str) -> None:
    """Text from a client never holds line breaks, NULs or lone surrogates: refusing them
    keeps them out of mail headers and the database alike, and the evidence hashed at
    signup is exactly what is stored (the columns would silently drop them)."""
    if _UNSTORABLE.search(value):
        raise ValidationError("Must not contain control characters, line breaks or invalid "
                              "characters (lone surrogates).")


class Text(ma.String):
    """A string from a client: :func:`no_control_characters`, and at most ``max_length``.
    Every text field of a public request schema is one (tests/test_schemas.py checks)."""

    def __init__(self, max_length: int | None = None, *, min_length: int | None = None,
                 **kwargs: Any) -> None:
        rules: list[Any] = [no_control_characters, *kwargs.pop("validate", ())]
        if max_length is not None or min_length is not None:
            rules.insert(0, validate.Length(min=min_length, max=max_length))
        super().__init__(validate=rules, **kwargs)


class WholeNumber(ma.Integer):
    """An integer: a JSON number without a fraction, or the digits a form post sends.

    marshmallow's ``Integer`` takes ``1.5`` as 1 and ``"١"`` (an Arabic-Indic one) as 1;
    ``strict=True`` would refuse the form's ``"1"``. A number too long for ``int``
    arrives as a ``Decimal`` (ops.requestjson) and is refused as too large.
    """

    _DIGITS = re.compile(r"[+-]?[0-9]+")
    _LONGEST = 18  # past this no version or count is meant

    def _validated(self, value: Any) -> int:
        if isinstance(value, str):
            digits = value.strip()
            if not self._DIGITS.fullmatch(digits):
                raise self.make_error("invalid")
            value = digits
        elif isinstance(value, Decimal):
            raise self.make_error("too_large")
        elif isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        if len(str(value).lstrip("+-")) > self._LONGEST:
            raise self.make_error("too_large")
        return int(value)


ADDRESS_RULE = (
    "An address the service can mail: at most 64 characters before the @ and 254 in all, a "
    "domain that can exist (IDN domains are welcome and are stored and mailed in their ASCII "
    "form). Characters outside ASCII before the @ are refused unless the service is set to "
    "mail them with SMTPUTF8 (OPTIN_SMTPUTF8=when_offered). Blanks around it are ignored."
)


class SignupSchema(Schema):
    """``POST /v1/subscriptions``: JSON or a plain HTML form post."""

    class Meta:
        unknown = EXCLUDE  # forms carry submit buttons and the like

    #: Checked with the service's own address rule (``consent.addresses``) by the view's
    #: :class:`~optin.web.subscribe.SignupForm`, so a 422 names ``email`` whichever check
    #: refuses it. 254: RFC 5321's limit on a whole address, as email-validator applies it.
    email = Text(254, min_length=3, required=True,
                 metadata={"example": "anna@example.org", "format": "email",
                           "description": ADDRESS_RULE})
    list = Text(64, min_length=1, required=True, metadata={"example": "newsletter"})
    consent_text_version = WholeNumber(required=True, validate=validate.Range(min=1, max=1_000_000),
                                       metadata={"example": 1})
    locale = Text(load_default=None, validate=[validate.OneOf(["de", "en"])],
                  metadata={"example": "de"})
    first_name = Text(200, load_default=None, allow_none=True)
    last_name = Text(200, load_default=None, allow_none=True)
    fields_ = ma.Dict(keys=Text(64, min_length=1), values=Text(1000), load_default=dict,
                      data_key="fields", attribute="fields")
    source_url = Text(2000, load_default=None, allow_none=True)
    redirect_url = Text(2000, load_default=None, allow_none=True)
    website = Text(load_default=None, allow_none=True,
                   metadata={"description": "honeypot: leave empty"})

    @validates_schema
    def _few_fields(self, data: dict[str, Any], **_: object) -> None:
        if len(data.get("fields") or {}) > MAX_FIELDS:
            raise ValidationError(f"At most {MAX_FIELDS} fields.", "fields")


class SignupAcceptedSchema(Schema):
    status = ma.String(metadata={"example": "accepted"})
    detail = ma.String()


class ProblemSchema(Schema):
    """RFC 9457 problem details (extension members allowed)."""

    class Meta:
        unknown = INCLUDE

    type = ma.String(required=True, metadata={"example": "about:blank"})
    title = ma.String(required=True, metadata={"example": "Unprocessable Content"})
    status = ma.Integer(required=True, metadata={"example": 422})
    detail = ma.String()
    errors = ma.Dict(keys=ma.String(), values=ma.List(ma.String()),
                     metadata={"example": {"email": ["Not a valid email address."]}})


# --- operator queries --------------------------------------------------------------------


class QuerySchema(Schema):
    """A query string as operators type it: blanks around a value are dropped, and a
    blank value counts as no value (so a required one is reported missing)."""

    @pre_load
    def _blank_is_missing(self, data: Mapping[str, Any], **_: object) -> dict[str, Any]:
        values = {key: data[key] for key in data}
        return {key: value.strip() if isinstance(value, str) else value
                for key, value in values.items() if not isinstance(value, str) or value.strip()}


class ThanksQuerySchema(Schema):
    list = Text(metadata={"example": "newsletter"})
    locale = Text(metadata={"example": "de"})
    back = Text(2000, metadata={"example": "https://www.example.com/newsletter", "description":
                                "the form's page, linked as \"Back\" only if it is on one of "
                                "the list's origins (else the list's website)"})


class EmailQuerySchema(QuerySchema):
    email = ma.String(required=True, metadata={"example": "anna@example.org"})


class ProofQuerySchema(EmailQuerySchema):
    list = ma.String(required=True, metadata={"example": "newsletter"})


class ProofFormatQuerySchema(ProofQuerySchema):
    format = ma.String(validate=validate.OneOf(["json", "html", "pdf", "receipt"]),
                       metadata={"description": "default: json, or html for Accept: text/html, "
                                                "pdf for Accept: application/pdf"})
    locale = ma.String(validate=validate.OneOf(["de", "en"]), metadata={
        "description": "language of the html and pdf document; default: Accept-Language, "
                       "then the list's"})


OUTBOX_LIMIT = (1, 1000)


class OutboxQuerySchema(QuerySchema):
    status = ma.String(validate=validate.OneOf(["pending", "done", "dead"]))
    limit = WholeNumber(load_default=100,
                        validate=validate.Range(min=OUTBOX_LIMIT[0], max=OUTBOX_LIMIT[1]),
                        metadata={"example": 100, "description": "rows to show, newest first"})


# --- answers: they dump the domain's objects and records -----------------------------------


class Answer(Schema):
    """A response shape. Extra keys are allowed, so adding one never breaks a client."""

    class Meta:
        unknown = INCLUDE


def _when(**kwargs: Any) -> ma.DateTime:
    """A UTC time, written as ``datetime.isoformat`` writes it, or null."""
    return ma.DateTime(format="iso", allow_none=True, **kwargs)


class JSONObject(ma.Dict):
    """A free-form JSON object; a stored null is written as ``{}``."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return super()._serialize(value or {}, attr, obj, **kwargs)


class StatusSchema(Answer):
    status = ma.String(metadata={"example": "ok"})


class ReadySchema(Answer):
    status = ma.String(validate=validate.OneOf(["ok", "unavailable"]))
    database = ma.String(metadata={"example": "ok"})
    migrations = ma.String(metadata={"example": "ok"})
    error = ma.String(metadata={"description": "exception class when the database is unreachable"})


class WebhookFormSchema(Schema):
    """The form fields ActiveCampaign posts (only the ones optin reads are listed)."""

    class Meta:
        unknown = INCLUDE

    type = ma.String(metadata={"example": "unsubscribe",
                               "description": "unsubscribe, spam/complaint, bounce, …"})
    date_time = ma.String(metadata={"example": "2026-05-02T08:41:07-05:00"})
    initiated_by = ma.String(metadata={"example": "contact"})
    initiated_from = ma.String(metadata={"example": "unsubscribe_link"})
    list = ma.String(metadata={"example": "1", "description": "ActiveCampaign list id; 0 = all"})
    contact_id = ma.String(data_key="contact[id]", metadata={"example": "42"})
    contact_email = ma.String(data_key="contact[email]", metadata={"example": "anna@example.org"})
    campaign_id = ma.String(data_key="campaign[id]")
    unsubscribe_reason = ma.String(data_key="unsubscribe[reason]")
    bounce_type = ma.String(data_key="bounce[type]")


class OneClickSchema(Schema):
    """RFC 8058: the body a mail client posts for ``List-Unsubscribe-Post``."""

    list_unsubscribe = ma.String(data_key="List-Unsubscribe",
                                 validate=validate.OneOf(["One-Click"]),
                                 metadata={"example": "One-Click"})


class EventSchema(Answer):
    """A ledger event (``ConsentEvent``)."""

    seq = ma.Integer()
    kind = ma.String(metadata={"example": "confirmed"})
    at = _when()
    origin = ma.String(allow_none=True, metadata={"example": "link"})
    ip = ma.String(allow_none=True)
    user_agent = ma.String(allow_none=True)
    consent_text_id = ma.Integer(allow_none=True)
    details = JSONObject()
    redacted_at = _when()
    content_hash = ma.String()
    chain_hash = ma.String()


class ConsentTextSchema(Answer):
    """A consent text version (``ConsentText``)."""

    id = ma.Integer()
    list = ma.String(attribute="mailing_list.slug", metadata={"example": "newsletter"})
    locale = ma.String(metadata={"example": "de"})
    version = ma.Integer(metadata={"example": 1})
    text = ma.String()
    sha256 = ma.String()
    privacy_policy_version = ma.String(allow_none=True)
    created_at = _when()


class SubscriptionSummarySchema(Answer):
    id = ma.Integer()
    list = ma.String(metadata={"example": "newsletter"})
    status = ma.String(validate=validate.OneOf(["pending", "confirmed", "unsubscribed",
                                                "minimized"]))
    created_at = _when()
    confirmed_at = _when()
    withdrawn_at = _when()
    withdrawal_origin = ma.String(allow_none=True)
    erased_at = _when()
    minimized_at = _when()
    retain_until = _when()
    retention = ma.String()


class SignupRecordSchema(Answer):
    """What one signup request entered (its evidence is its ledger event, ``seq``)."""

    seq = ma.Integer(metadata={"description": "the seq of its signup event in the ledger"})
    created_at = _when()
    email = ma.String(allow_none=True)
    locale = ma.String()
    consent_text_id = ma.Integer(allow_none=True)
    first_name = ma.String(allow_none=True)
    last_name = ma.String(allow_none=True)
    fields_ = ma.Dict(allow_none=True, data_key="fields", attribute="fields")
    source_url = ma.String(allow_none=True)


class SubscriptionRecordSchema(SubscriptionSummarySchema):
    list_name = ma.String()
    email = ma.String(allow_none=True)
    locale = ma.String(allow_none=True)
    first_name = ma.String(allow_none=True)
    last_name = ma.String(allow_none=True)
    fields_ = ma.Dict(allow_none=True, data_key="fields", attribute="fields")
    source_url = ma.String(allow_none=True)
    consent_text_id = ma.Integer(allow_none=True)
    activecampaign_contact_id = ma.String(allow_none=True)
    signups = ma.List(ma.Nested(SignupRecordSchema))
    events = ma.List(ma.Nested(EventSchema))


class SuppressionSchema(Answer):
    list = ma.String()
    reason = ma.String(allow_none=True)
    since = _when()


class QueuedSignupSchema(Answer):
    """A signup request the worker has not processed yet (moments, normally)."""

    list = ma.String(allow_none=True)
    received_at = ma.String(metadata={"example": "2026-12-01T08:41:04.123456+00:00"})
    ip = ma.String(allow_none=True)
    user_agent = ma.String(allow_none=True)
    entered = ma.Dict(metadata={"description": "The values the request carried, as entered"})


class QueuedWithdrawalSchema(Answer):
    """A withdrawal the worker has not applied yet (a delivery held its subscription)."""

    subscription_id = ma.Integer()
    kind = ma.String(metadata={"example": "unsubscribed"})
    origin = ma.String(metadata={"example": "one_click"})
    received_at = ma.String(metadata={"example": "2026-12-01T08:41:04.123456+00:00"})
    ip = ma.String(allow_none=True)
    user_agent = ma.String(allow_none=True)


class QueuedConfirmationSchema(Answer):
    """A click on a confirmation link the worker has not applied yet (moments, normally)."""

    subscription_id = ma.Integer()
    received_at = ma.String(metadata={"example": "2026-12-01T08:41:04.123456+00:00"})
    ip = ma.String(allow_none=True)
    user_agent = ma.String(allow_none=True)


class ContactExportSchema(Answer):
    """Art. 15 / Art. 20: everything stored about an address."""

    address = ma.String(metadata={"example": "anna@example.org"})
    address_hash = ma.String()
    generated_at = _when()
    purpose = ma.String()
    recipients = ma.List(ma.String())
    subscriptions = ma.List(ma.Nested(SubscriptionRecordSchema))
    consent_texts = ma.List(ma.Nested(ConsentTextSchema))
    suppressions = ma.List(ma.Nested(SuppressionSchema))
    queued_signups = ma.List(ma.Nested(QueuedSignupSchema), metadata={
        "description": "Signup requests received but not yet processed by the worker"})
    queued_confirmations = ma.List(ma.Nested(QueuedConfirmationSchema), metadata={
        "description": "Confirmation clicks received but not yet applied by the worker"})
    queued_withdrawals = ma.List(ma.Nested(QueuedWithdrawalSchema), metadata={
        "description": "Withdrawals, erasures and bounces received but not yet applied by "
                       "the worker (a delivery held the subscription)"})


class ContactLookupSchema(Answer):
    address = ma.String(metadata={"example": "anna@example.org"})
    address_hash = ma.String()
    subscriptions = ma.List(ma.Nested(SubscriptionSummarySchema))


class ErasedSubscriptionSchema(Answer):
    subscription_id = ma.Integer()
    list = ma.String()
    status_before = ma.String()
    status = ma.String()
    deleted_now = ma.List(ma.String())
    kept = ma.List(ma.String())
    kept_until = _when()
    retention = ma.String()


class ErasureSchema(Answer):
    """Art. 17: what was deleted now and what is kept as proof until when."""

    address_hash = ma.String()
    erased_at = _when()
    found = ma.Boolean()
    detail = ma.String()
    legal_basis = ma.String(allow_none=True)
    activecampaign = ma.String()
    subscriptions = ma.List(ma.Nested(ErasedSubscriptionSchema))


# --- the proof of consent and its receipt ----------------------------------------------------


class ProofListSchema(Answer):
    slug = ma.String()
    name = ma.String()
    controller = ma.String(allow_none=True)
    privacy_policy_url = ma.String(allow_none=True)
    purpose = ma.String()
    purpose_set = ma.Boolean(metadata={"description": "false: the purpose is the default one"})
    activecampaign_list_id = ma.Integer(allow_none=True)


class ShownTextSchema(ConsentTextSchema):
    """The consent text a signup was shown, and whether it still matches its hash."""

    sha256_verified = ma.Boolean()


class SeenSchema(Answer):
    """When something was done, from which IP address, with which user agent."""

    at = _when()
    ip = ma.String(allow_none=True)
    user_agent = ma.String(allow_none=True)


class ReceiptSignupSchema(SeenSchema):
    source_url = ma.String(allow_none=True)


class SignupEvidenceSchema(ReceiptSignupSchema):
    """One signup request: its ledger event's evidence and the values it entered."""

    seq = ma.Integer(metadata={"description": "its event in the ledger"})
    kind = ma.String(metadata={"example": "signup_requested"})
    source_url_from = ma.String(allow_none=True, metadata={
        "description": "form: sent by the form; referer: the request's Referer header"})
    privacy_policy_url = ma.String(allow_none=True, metadata={
        "description": "the list's privacy policy when this signup was made"})
    locale = ma.String(allow_none=True)
    entered = ma.Dict(metadata={"description": "what this signup's form sent, while it is kept"})
    entered_sha256 = ma.String(allow_none=True)
    fields_entered = ma.List(ma.String(), allow_none=True)
    consent_text = ma.Nested(ShownTextSchema, allow_none=True)
    consent_text_id = ma.Integer(allow_none=True)
    action = ma.String(allow_none=True, metadata={"description": "what a repeat signup did"})
    confirmed = ma.Boolean(metadata={"description": "the signup the confirmation confirmed"})
    mails = ma.List(ma.String(), metadata={
        "description": "Message-IDs of the confirmation mails sent for this signup"})
    redacted_at = _when()


class ReceiptMailSchema(Answer):
    sent_at = _when()
    message_id = ma.String(allow_none=True)
    template = ma.String(allow_none=True)
    template_sha256 = ma.String(allow_none=True)
    text_sha256 = ma.String(allow_none=True)
    html_sha256 = ma.String(allow_none=True)
    signup_seq = ma.Integer(allow_none=True, metadata={
        "description": "a confirmation mail: the signup it was sent for"})


class TemplateSourceSchema(Answer):
    subject = ma.String()
    text = ma.String()
    layouts = ma.Dict(keys=ma.String(), values=ma.String(),
                      metadata={"description": "the base templates the mail extends, by name"})


class MailCopySchema(Answer):
    """The confirmation mail as it left (link token and, after withdrawal, names marked),
    and whether each part hashes as the ledger recorded when the mail left."""

    parts = ma.Dict(keys=ma.String(), values=ma.String(allow_none=True),
                    metadata={"description": "subject, text and html as shown"})
    with_names = ma.Boolean(metadata={"description": "the names the mail quoted are in"})
    sha256 = ma.Dict(keys=ma.String(), values=ma.String(allow_none=True))
    recorded_sha256 = ma.Dict(keys=ma.String(), values=ma.String(), allow_none=True)
    matches = ma.Boolean(metadata={"description": "every part hashes as recorded"})
    token_sha256 = ma.List(ma.String(), metadata={
        "description": "SHA-256 of the link token the token marker stands for"})
    names_removed = ma.List(ma.String(), metadata={
        "description": "names replaced by their markers (deleted at withdrawal)"})
    markers = ma.Dict(keys=ma.String(), values=ma.String())


class MailEvidenceSchema(ReceiptMailSchema):
    """A mail as sent; a confirmation mail also says whether its template still hashes
    as recorded, and if so its source and its text as the recipient read it."""

    kind = ma.String(metadata={"example": "confirmation_sent"})
    subject = ma.String(allow_none=True)
    matches_current_template = ma.Boolean()
    template_source = ma.Nested(TemplateSourceSchema, allow_none=True)
    reconstructed_text = ma.String(allow_none=True)
    copy = ma.Nested(MailCopySchema, allow_none=True)


class ConfirmationEvidenceSchema(SeenSchema):
    signup_seq = ma.Integer(allow_none=True, metadata={"description": "the signup confirmed"})
    locale = ma.String(allow_none=True)
    entered_sha256 = ma.String(allow_none=True, metadata={
        "description": "digest of the values confirmed (the confirmed signup's)"})
    redacted_at = _when()


class WithdrawalSchema(Answer):
    at = _when()
    channel = ma.String(allow_none=True)


class LedgerCheckSchema(Answer):
    ok = ma.Boolean()
    events = ma.Integer()
    head = ma.String(allow_none=True)
    problems = ma.List(ma.String())


class CheckpointLeafSchema(Answer):
    subscription_id = ma.Integer()
    seq = ma.Integer()
    chain_hash = ma.String()


class CheckpointCoverageSchema(Answer):
    """The signed ledger checkpoint covering a cycle's events, and what checks it outside."""

    checkpoint = ma.Integer(metadata={"description": "its number in the published file"})
    at = ma.String(metadata={"description": "when it was signed (UTC, ISO 8601)"})
    root = ma.String(metadata={"description": "Merkle root (RFC 9162) over every chain head"})
    tree_size = ma.Integer()
    key_id = ma.String()
    public_key = ma.String(metadata={"description": "Ed25519 public key, base64"})
    statement = ma.String(metadata={"description": "the exact signed text (canonical JSON)"})
    signature = ma.String(metadata={"description": "Ed25519 signature of the statement, base64"})
    tsa_token = ma.String(allow_none=True, metadata={
        "description": "RFC 3161 time-stamp token over SHA-256 of the statement, base64 DER"})
    leaf = ma.Nested(CheckpointLeafSchema)
    leaf_index = ma.Integer()
    merkle_path = ma.List(ma.List(ma.String()), metadata={
        "description": "[side, sibling hash] from the leaf up to the root"})
    covers_events_through = ma.Integer(metadata={
        "description": "events #1 up to this one are covered; later ones by a later checkpoint"})
    published_in = ma.String()


class ConsentCycleSchema(Answer):
    """One consent cycle (signup → confirmation → withdrawal) with its evidence."""

    subscription_id = ma.Integer()
    status = ma.String()
    address = ma.String(allow_none=True)
    retention = ma.String()
    retain_until = _when()
    consent_text = ma.Nested(ShownTextSchema, allow_none=True)
    signups = ma.List(ma.Nested(SignupEvidenceSchema), metadata={
        "description": "every signup request, in ledger order"})
    signup = ma.Nested(SignupEvidenceSchema, allow_none=True, metadata={"description": "the first"})
    repeated_signups = ma.List(ma.Nested(SignupEvidenceSchema))
    mails = ma.List(ma.Nested(MailEvidenceSchema))
    confirmation = ma.Nested(ConfirmationEvidenceSchema, allow_none=True)
    withdrawal = ma.Nested(WithdrawalSchema, allow_none=True)
    erased_at = _when()
    minimized_at = _when()
    later_events = ma.List(ma.Nested(EventSchema))
    events = ma.List(ma.Nested(EventSchema))
    ledger = ma.Nested(LedgerCheckSchema)
    checkpoint = ma.Nested(CheckpointCoverageSchema, allow_none=True)
    imported = ma.Dict(allow_none=True, metadata={
        "description": "evidence imported from another system (optin import), as the source "
                       "gave it; null for a consent recorded here"})


class ControllerSchema(Answer):
    name = ma.String(allow_none=True, metadata={"example": "Example GmbH"})
    address = ma.List(ma.String(), metadata={"example": ["Musterstraße 1", "10115 Berlin"]})


class ProofSchema(Answer):
    """The proof of consent (BGH I ZR 164/09, EDPB 05/2020 §108), newest cycle first."""

    title = ma.String()
    document_id = ma.String(metadata={
        "description": "this document's id, also in its proof_printed ledger events"})
    generated_at = _when()
    generated_by = ma.String()
    controller = ma.Nested(ControllerSchema)
    address = ma.String()
    address_hash = ma.String()
    list = ma.Nested(ProofListSchema)
    consents = ma.List(ma.Nested(ConsentCycleSchema))
    ledger_ok = ma.Boolean()
    checkpoint = ma.Dict(allow_none=True, metadata={
        "description": "the signed ledger checkpoint that covers these events (null: none yet)"})
    legal_notes = ma.List(ma.String())


class ReceiptTextSchema(Answer):
    """The consent text in a receipt (all null if none was recorded)."""

    version = ma.Integer(allow_none=True, dump_default=None)
    locale = ma.String(allow_none=True, dump_default=None)
    sha256 = ma.String(allow_none=True, dump_default=None)
    text = ma.String(allow_none=True, dump_default=None)


class ReceiptLedgerSchema(Answer):
    verified = ma.Boolean(attribute="ok")
    events = ma.Integer()
    head = ma.String(allow_none=True)


class DoubleOptInSchema(Answer):
    """The receipt's extension: the evidence of the double opt-in."""

    status = ma.String()
    consentText = ma.Nested(ReceiptTextSchema)  # noqa: N815 (the receipt's own field names)
    signup = ma.Nested(ReceiptSignupSchema, allow_none=True)
    confirmationMails = ma.List(ma.Nested(ReceiptMailSchema))  # noqa: N815
    confirmation = ma.Nested(SeenSchema)
    withdrawal = ma.Nested(WithdrawalSchema, allow_none=True)
    ledger = ma.Nested(ReceiptLedgerSchema)


class ReceiptSchema(Answer):
    """Kantara Consent Receipt v1.1, with the double-opt-in evidence in ``doubleOptIn``."""

    version = ma.String(metadata={"example": "KI-CR-v1.1.0"})
    jurisdiction = ma.String()
    consentTimestamp = ma.Integer()  # noqa: N815 (the receipt's own field names)
    collectionMethod = ma.String()  # noqa: N815
    consentReceiptID = ma.String()  # noqa: N815
    language = ma.String(allow_none=True)
    piiPrincipalId = ma.String(allow_none=True)  # noqa: N815
    piiControllers = ma.List(ma.Dict())  # noqa: N815
    policyUrl = ma.String(allow_none=True)  # noqa: N815
    services = ma.List(ma.Dict())
    sensitive = ma.Boolean()
    spiCat = ma.List(ma.String())  # noqa: N815
    doubleOptIn = ma.Nested(DoubleOptInSchema)  # noqa: N815


# --- lists, outbox, retention, stats -------------------------------------------------------


class ListSchema(Answer):
    """A mailing list (``MailingList``)."""

    slug = ma.String(metadata={"example": "newsletter"})
    name = ma.String(metadata={"example": "Example Newsletter"})
    ac_list_id = ma.Integer(allow_none=True)
    default_locale = ma.String()
    redirect_urls = ma.List(ma.String(), allow_none=True)
    origins = ma.List(ma.String(), allow_none=True)
    send_welcome = ma.Boolean()
    send_goodbye = ma.Boolean()
    sender = ma.String(allow_none=True)
    reply_to = ma.String(allow_none=True)
    controller = ma.String(allow_none=True)
    privacy_policy_url = ma.String(allow_none=True)
    purpose = ma.String(allow_none=True)
    website_url = ma.String(allow_none=True)
    imprint_url = ma.String(allow_none=True)
    postal_address = ma.String(allow_none=True)
    sender_name = ma.String(allow_none=True)
    created_at = _when()


class ListDetailSchema(ListSchema):
    """A list with its consent texts: the current one per locale, and every version."""

    current_consent_texts = ma.Dict(keys=ma.String(), values=ma.Nested(ConsentTextSchema))
    consent_texts = ma.List(ma.Nested(ConsentTextSchema))


class ListsSchema(Answer):
    lists = ma.List(ma.Nested(ListSchema))


class ConsentTextsSchema(Answer):
    list = ma.String(attribute="slug")
    consent_texts = ma.List(ma.Nested(ConsentTextSchema))


class OutboxItemSchema(Answer):
    """An outbox row (``OutboxItem``)."""

    id = ma.Integer()
    kind = ma.String(metadata={"example": "confirm_mail"})
    status = ma.String(validate=validate.OneOf(["pending", "done", "dead"]))
    subscription_id = ma.Integer(allow_none=True)
    attempts = ma.Integer()
    next_attempt_at = _when()
    last_error = ma.String(allow_none=True)
    created_at = _when()
    finished_at = _when()


class BacklogSchema(Answer):
    pending = ma.Integer()
    due = ma.Integer()
    dead = ma.Integer()
    oldest_pending_age_seconds = ma.Float()


class OutboxSchema(Answer):
    items = ma.List(ma.Nested(OutboxItemSchema))
    backlog = ma.Nested(BacklogSchema)


class RetentionRunSchema(Answer):
    """A run of the retention job (``RetentionRun``)."""

    id = ma.Integer()
    as_of = _when()
    dry_run = ma.Boolean()
    host = ma.String(allow_none=True)
    started_at = _when()
    finished_at = _when()
    counts = ma.Dict(allow_none=True)


class RetentionRunsSchema(Answer):
    runs = ma.List(ma.Nested(RetentionRunSchema))


class StatsSchema(Answer):
    subscriptions = ma.Dict(keys=ma.String(), values=ma.Dict(keys=ma.String(), values=ma.Integer()),
                            metadata={"example": {"newsletter": {"confirmed": 12, "pending": 3}}})
    suppressions = ma.Integer()
    consents = ma.Dict(keys=ma.String(), values=ma.Dict(), metadata={
        "description": "per list: subscriptions per status recorded here (native) and brought "
                       "in by optin import (imported)",
        "example": {"newsletter": {"native": {"confirmed": 12}, "imported": {"confirmed": 800}}}})
    outbox = ma.Nested(BacklogSchema)
    last_retention_run = ma.Nested(RetentionRunSchema, allow_none=True, metadata={
        "description": "The last run that minimized; dry runs change nothing and are not counted"})
