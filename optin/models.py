"""The tables: lists, consent texts, subscriptions, the consent ledger, the outbox.

Times are stored as UTC. SQLite has no time zones, so :class:`UTCDateTime`
stores naive UTC and hands back aware datetimes on both databases.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeEngine

from optin.extensions import Base, db

if TYPE_CHECKING:
    # What mypy checks the tables against: db.Model is built at run time from Base.
    Model = Base
else:
    Model = db.Model

# --- text as the database can hold it ---------------------------------------------------
#
# Whatever a client sends must never make a write fail: a withdrawal lost to a NUL byte
# in a webhook's reason is a broken promise. PostgreSQL refuses NUL in text and in JSONB
# (\u0000), and no driver can encode a lone surrogate; neither belongs in evidence. The
# other C0 controls (tab, line feed and carriage return excepted) are dropped too, so
# stored evidence prints cleanly. Values longer than their column are cut to fit.
# Writers that hash what they store (the ledger) make values storable before hashing,
# so the column types below are a last line that then changes nothing.

_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def storable_text(value: str, max_length: int | None = None) -> str:
    """``value`` without the characters a database cannot hold, cut to ``max_length``."""
    if _UNSTORABLE.search(value) is not None:
        value = _UNSTORABLE.sub("", value)
    return value if max_length is None else value[:max_length]


def storable_json(value: Any) -> Any:
    """A JSON document with every key and string made storable (see :func:`storable_text`)."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    return value


class StorableText(TypeDecorator[str]):
    """VARCHAR(n), or TEXT without a length, that stores any string: unstorable
    characters dropped, cut to n."""

    impl: TypeEngine[Any] | type[TypeEngine[Any]] = String
    cache_ok = True

    def __init__(self, length: int | None = None) -> None:
        super().__init__(length)
        self.length = length
        if length is None:
            self.impl = Text()  # what the migrations (and a schema diff) call it

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else storable_text(value, self.length)


class StorableJSON(TypeDecorator[Any]):
    """JSON (JSONB on PostgreSQL) whose strings are made storable on the way in."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(JSONB() if dialect.name == "postgresql" else JSON())

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else storable_json(value)


JSONType = StorableJSON
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a bigint.
BigID = BigInteger().with_variant(Integer(), "sqlite")


Locale = Literal["de", "en"]
#: The languages of consent texts, mails and pages.
LOCALES: tuple[Locale, ...] = ("de", "en")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SubscriptionStatus(StrEnum):
    """Where a subscription stands (the state machine: ``consent.subscriptions``)."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    MINIMIZED = "minimized"


#: The states the partial unique index ``uq_subscription_active`` keeps to one per address and list.
ACTIVE_STATUSES = (SubscriptionStatus.PENDING, SubscriptionStatus.CONFIRMED)


class OutboxKind(StrEnum):
    """The work an outbox row asks for; ``optin.OUTBOX_HANDLERS`` maps each to its handler."""

    CONFIRM_MAIL = "confirm_mail"
    WELCOME_MAIL = "welcome_mail"
    GOODBYE_MAIL = "goodbye_mail"
    AC_SUBSCRIBE = "ac_subscribe"
    AC_UNSUBSCRIBE = "ac_unsubscribe"
    SIGNUP_INTAKE = "signup_intake"  # a signup request's evidence, for the state machine
    CONFIRM_INTAKE = "confirm_intake"  # a confirmation click's evidence, for the state machine
    UNSUBSCRIBE_LINK_MAIL = "unsubscribe_link_mail"
    RELINK_INTAKE = "relink_intake"  # a request for fresh unsubscribe links (relink.py)
    RESEND_INTAKE = "resend_intake"  # a request for a fresh confirmation mail (resends.py)
    WITHDRAWAL_INTAKE = "withdrawal_intake"  # a withdrawal a locked row made wait (withdrawals.py)


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"  # a dead letter: waits for an operator's retry


class EventKind(StrEnum):
    """What a ledger event records."""

    SIGNUP_REQUESTED = "signup_requested"
    SIGNUP_REPEATED = "signup_repeated"
    CONFIRMATION_RESEND_REQUESTED = "confirmation_resend_requested"
    CONFIRMATION_SENT = "confirmation_sent"
    CONFIRMED = "confirmed"
    WELCOME_SENT = "welcome_sent"
    GOODBYE_SENT = "goodbye_sent"
    UNSUBSCRIBE_LINK_REQUESTED = "unsubscribe_link_requested"
    UNSUBSCRIBE_LINK_SENT = "unsubscribe_link_sent"
    UNSUBSCRIBED = "unsubscribed"
    COMPLAINT = "complaint"
    BOUNCED = "bounced"
    ERASED = "erased"
    PROOF_PRINTED = "proof_printed"
    ACCESSED = "accessed"
    SYNCED = "synced"
    SYNC_SKIPPED = "sync_skipped"
    MINIMIZED = "minimized"
    CONSENT_IMPORTED = "consent_imported"  # evidence from another system (optin import)


class MailingList(Model):
    __tablename__ = "mailing_list"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(StorableText(64), unique=True)
    name: Mapped[str] = mapped_column(StorableText(200))
    ac_list_id: Mapped[int | None] = mapped_column(Integer)
    redirect_urls: Mapped[list[str]] = mapped_column(JSONType, default=list)
    origins: Mapped[list[str]] = mapped_column(JSONType, default=list)
    default_locale: Mapped[str] = mapped_column(StorableText(8), default="de")
    send_welcome: Mapped[bool] = mapped_column(default=True)
    send_goodbye: Mapped[bool] = mapped_column(default=False)
    sender: Mapped[str | None] = mapped_column(StorableText(320))
    reply_to: Mapped[str | None] = mapped_column(StorableText(320))
    controller: Mapped[str | None] = mapped_column(StorableText(500))
    privacy_policy_url: Mapped[str | None] = mapped_column(StorableText(2000))
    purpose: Mapped[str | None] = mapped_column(StorableText(500))
    # Shown in page and mail footers (ops.identity); unset = the global settings.
    website_url: Mapped[str | None] = mapped_column(StorableText(2000))
    imprint_url: Mapped[str | None] = mapped_column(StorableText(2000))
    postal_address: Mapped[str | None] = mapped_column(StorableText(500))
    sender_name: Mapped[str | None] = mapped_column(StorableText(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    consent_texts: Mapped[list[ConsentText]] = relationship(
        back_populates="mailing_list", order_by="[ConsentText.locale, ConsentText.version]"
    )

    @property
    def current_consent_texts(self) -> dict[str, ConsentText]:
        """The newest text in each locale: what a form shows now."""
        return {text.locale: text for text in self.consent_texts}  # the last version wins


class ConsentText(Model):
    """The exact wording a form showed; a signup names the version it showed."""

    __tablename__ = "consent_text"
    __table_args__ = (UniqueConstraint("list_id", "locale", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_list.id"))
    locale: Mapped[str] = mapped_column(StorableText(8))
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(StorableText())
    sha256: Mapped[str] = mapped_column(StorableText(64))
    privacy_policy_version: Mapped[str | None] = mapped_column(StorableText(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    mailing_list: Mapped[MailingList] = relationship(back_populates="consent_texts")

    @property
    def sha256_verified(self) -> bool:
        """Whether the stored text still hashes as recorded (a text edited in place shows)."""
        return hashlib.sha256(self.text.encode()).hexdigest() == self.sha256


class Subscription(Model):
    """One consent cycle of one address on one list.

    A new signup after a withdrawal starts a new row, so every row's proof stays
    intact for its own retention period. At most one *active* (pending or
    confirmed) row exists per address and list: a partial unique index makes
    concurrent signups collapse into one.
    """

    __tablename__ = "subscription"
    __table_args__ = (
        Index(
            "uq_subscription_active",
            "list_id",
            "email_hash",
            unique=True,
            sqlite_where=text("status IN ('pending', 'confirmed')"),
            postgresql_where=text("status IN ('pending', 'confirmed')"),
        ),
        # The retention job's queue: only rows not yet minimized, in lapse order.
        Index(
            "ix_subscription_retain_until",
            "retain_until",
            "id",
            sqlite_where=text("minimized_at IS NULL"),
            postgresql_where=text("minimized_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_list.id"))
    status: Mapped[str] = mapped_column(StorableText(16), default=SubscriptionStatus.PENDING)
    email: Mapped[str | None] = mapped_column(StorableText(320))
    email_hash: Mapped[str] = mapped_column(StorableText(64), index=True)
    locale: Mapped[str] = mapped_column(StorableText(8))
    first_name: Mapped[str | None] = mapped_column(StorableText(200))
    last_name: Mapped[str | None] = mapped_column(StorableText(200))
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    source_url: Mapped[str | None] = mapped_column(StorableText(2000))
    consent_text_id: Mapped[int | None] = mapped_column(ForeignKey("consent_text.id"))
    # Part of every link; replaced on withdrawal so older links stop confirming.
    nonce: Mapped[str] = mapped_column(StorableText(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawal_origin: Mapped[str | None] = mapped_column(StorableText(32))
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    minimized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the record lapses and gets minimized; NULL while consent is in use.
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_mail_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ac_contact_id: Mapped[str | None] = mapped_column(StorableText(32))
    # Head of this subscription's hash chain (see ledger.py).
    ledger_seq: Mapped[int] = mapped_column(Integer, default=0)
    ledger_head: Mapped[str | None] = mapped_column(StorableText(64))
    # Where an imported consent came from (mailchimp, csv, activecampaign); NULL when the
    # consent was recorded here. Its evidence is the ``consent_imported`` ledger event.
    imported_from: Mapped[str | None] = mapped_column(StorableText(32))

    mailing_list: Mapped[MailingList] = relationship()
    consent_text: Mapped[ConsentText | None] = relationship()
    events: Mapped[list[ConsentEvent]] = relationship(
        back_populates="subscription", order_by="ConsentEvent.seq"
    )


class Signup(Model):
    """What one signup request entered, tied to its ledger event (``seq``).

    A subscription can be signed up for more than once while it is pending,
    from anyone who knows the address. Each request keeps its own values here,
    and a confirmation link names the signup it was mailed for, so confirming
    copies exactly that signup's values onto the subscription. The ledger event
    keeps a digest of the values (``entered_sha256``); the values themselves are
    deleted at withdrawal like the subscription's.
    """

    __tablename__ = "signup"
    __table_args__ = (UniqueConstraint("subscription_id", "seq"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscription.id"))
    # The seq of its signup_requested / signup_repeated event in the subscription's ledger.
    seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    email: Mapped[str | None] = mapped_column(StorableText(320))
    locale: Mapped[str] = mapped_column(StorableText(8))
    consent_text_id: Mapped[int | None] = mapped_column(ForeignKey("consent_text.id"))
    first_name: Mapped[str | None] = mapped_column(StorableText(200))
    last_name: Mapped[str | None] = mapped_column(StorableText(200))
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    source_url: Mapped[str | None] = mapped_column(StorableText(2000))

    consent_text: Mapped[ConsentText | None] = relationship()


class MailBody(Model):
    """One part of a sent mail, link token and names marked (``consent.mailcopies``),
    stored once by its SHA-256: mails made from one template are the same then."""

    __tablename__ = "mail_body"

    sha256: Mapped[str] = mapped_column(StorableText(64), primary_key=True)
    body: Mapped[str] = mapped_column(Text)


class MailCopy(Model):
    """A confirmation mail as it left: its parts (``mail_body``) and, until the
    withdrawal, the names it quoted (each occurrence as rendered, per part)."""

    __tablename__ = "mail_copy"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscription.id"), index=True)
    message_id: Mapped[str] = mapped_column(StorableText(255))
    template: Mapped[str] = mapped_column(StorableText(64))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    subject_sha256: Mapped[str] = mapped_column(StorableText(64))
    text_sha256: Mapped[str] = mapped_column(StorableText(64))
    html_sha256: Mapped[str] = mapped_column(StorableText(64))
    names: Mapped[dict[str, list[str]] | None] = mapped_column(JSONType)


class ConsentEvent(Model):
    """Append-only fact about a subscription's consent, hash-chained per subscription."""

    __tablename__ = "consent_event"
    __table_args__ = (UniqueConstraint("subscription_id", "seq"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    # No index of its own: the (subscription_id, seq) key's index leads with it.
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscription.id"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(StorableText(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    ip: Mapped[str | None] = mapped_column(StorableText(45))
    user_agent: Mapped[str | None] = mapped_column(StorableText(512))
    consent_text_id: Mapped[int | None] = mapped_column(ForeignKey("consent_text.id"))
    origin: Mapped[str] = mapped_column(StorableText(32))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    content_hash: Mapped[str] = mapped_column(StorableText(64))
    chain_hash: Mapped[str] = mapped_column(StorableText(64))
    # Set when minimization removed the content; the chain stays verifiable.
    redacted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    subscription: Mapped[Subscription] = relationship(back_populates="events")
    consent_text: Mapped[ConsentText | None] = relationship()


class OutboxItem(Model):
    """Work a state change causes, committed with it and delivered by the worker.

    Rows are never deleted by delivery: ``done`` rows are history, ``dead`` rows
    are dead letters waiting for an operator's retry.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        # The claim's "is an earlier row of this key pending?": one probe per due row,
        # whatever the planner's statistics say (delivery.outbox._first_of_its_key).
        Index("ix_outbox_pending_serial", "serial_key", "id",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    kind: Mapped[str] = mapped_column(StorableText(32))
    #: Rows sharing a key run one after another in id order (a signup's address: its
    #: requests keep their order whichever worker thread takes them); None: any order.
    serial_key: Mapped[str | None] = mapped_column(StorableText(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscription.id"), index=True
    )
    status: Mapped[str] = mapped_column(StorableText(8), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(StorableText())
    claimed_by: Mapped[str | None] = mapped_column(StorableText(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @staticmethod
    def pending_values(kind: OutboxKind, *, subscription_id: int | None = None,
                       payload: dict[str, Any] | None = None, now: datetime | None = None,
                       serial_key: str | None = None) -> dict[str, Any]:
        """The column values of new work, due at ``now``: the one place an outbox row is built,
        whether it is added to the session or inserted by a hand-written statement."""
        now = now or utcnow()
        return {"kind": kind, "serial_key": serial_key,
                "subscription_id": subscription_id, "payload": payload or {},
                "status": OutboxStatus.PENDING, "attempts": 0, "next_attempt_at": now,
                "created_at": now}

    @classmethod
    def pending(cls, kind: OutboxKind, *, subscription_id: int | None = None,
                payload: dict[str, Any] | None = None, now: datetime | None = None,
                serial_key: str | None = None) -> OutboxItem:
        """A new row for the session (delivered after the caller's commit)."""
        return cls(**cls.pending_values(kind, subscription_id=subscription_id, payload=payload,
                                        now=now, serial_key=serial_key))


class MailIntent(Model):
    """A mail about to be handed to the relay, recorded before it is (issue 14).

    Written on a connection of its own just before the SMTP transaction, and deleted in
    the delivery's transaction together with the ledger event that records the mail as
    sent. One still here when its row is delivered again means the worker stopped in
    between: the mail may have left, so its Message-ID goes into the ledger then. No
    foreign keys on purpose: inserting it must not wait for the row locks the delivery
    holds.
    """

    __tablename__ = "mail_intent"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(BigID, index=True)
    subscription_id: Mapped[int] = mapped_column(BigID)
    kind: Mapped[str] = mapped_column(StorableText(32))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Suppression(Model):
    """An address (as keyed hash) that withdrew: no sync or import may re-add it
    without a new confirmed consent. Survives minimization."""

    __tablename__ = "suppression"
    __table_args__ = (UniqueConstraint("list_id", "email_hash"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_list.id"))
    email_hash: Mapped[str] = mapped_column(StorableText(64))
    reason: Mapped[str] = mapped_column(StorableText(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Model):
    """An operator's call (who, what, about which address hash), for accountability.

    An HTTP call also names its method, its route (the URL rule, never the path,
    which may carry an address) and the status it was answered with; a CLI call
    leaves those empty.
    """

    __tablename__ = "audit_entry"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(StorableText(100))
    action: Mapped[str] = mapped_column(StorableText(64))
    email_hash: Mapped[str | None] = mapped_column(StorableText(64), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    method: Mapped[str | None] = mapped_column(StorableText(16))
    route: Mapped[str | None] = mapped_column(StorableText(200))
    status: Mapped[int | None] = mapped_column(Integer)


class RetentionRun(Model):
    """One run of the retention job: as of when, what it did, how many rows."""

    __tablename__ = "retention_run"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    dry_run: Mapped[bool] = mapped_column(default=False)
    host: Mapped[str | None] = mapped_column(StorableText(200))
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class JobState(Model):
    """Small named state of periodic jobs (last run, resume cursors, shared limits)."""

    __tablename__ = "job_state"

    name: Mapped[str] = mapped_column(StorableText(100), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class LedgerCheckpoint(Model):
    """A signed checkpoint of the ledger: the Merkle root over every chain head.

    The database's copy; what counts is the copy published outside it
    (``consent.checkpoints``), which ``optin ledger verify`` checks this one against.
    """

    __tablename__ = "ledger_checkpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tree_size: Mapped[int] = mapped_column(Integer)
    root: Mapped[str] = mapped_column(StorableText(64))
    key_id: Mapped[str] = mapped_column(StorableText(64))
    # The exact signed text (canonical JSON) and its Ed25519 signature (base64).
    statement: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(StorableText(128))
    tsa_token: Mapped[str | None] = mapped_column(Text)  # RFC 3161 token, base64 DER
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LedgerCheckpointLeaf(Model):
    """A chain head as a checkpoint saw it, stored only when it moved since the one before:
    a checkpoint's leaves are each subscription's newest row up to it. No foreign key to
    the subscription: a deleted subscription must leave its leaf behind to be noticed."""

    __tablename__ = "ledger_checkpoint_leaf"
    __table_args__ = (Index("ix_ledger_checkpoint_leaf_subscription", "subscription_id",
                            "checkpoint_id"),)

    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("ledger_checkpoint.id"), primary_key=True)
    subscription_id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    chain_hash: Mapped[str] = mapped_column(StorableText(64))
