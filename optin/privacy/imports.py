"""Bring the consents another system holds in, with their evidence, clearly marked.

A source (``privacy.import_files``: a Mailchimp export, the generic CSV;
``activecampaign.imports``: ActiveCampaign's list) yields rows; this module
decides what each means here and writes it. Each row is one of:

* **imported** -- unknown here and subscribed there: a new ``confirmed``
  subscription with ``imported_from`` set and a ``consent_imported`` ledger
  event (origin ``import``) holding the source, the file's SHA-256, the file
  and row, the operator, the time, and the evidence exactly as given with
  what was missing. It is never presented as a double opt-in made here.
* **withdrawn** -- unsubscribed or cleaned there: a new withdrawn record
  (``consent_imported`` then ``unsubscribed``/``bounced``, origin ``import``)
  and a suppression; or, if the address has an active subscription here
  whose consent is older than that withdrawal (or of unknown age), that
  subscription is withdrawn through the state machine (so the withdrawal
  reaches ActiveCampaign too).
* **suppressed** -- subscribed there, but the address withdrew here: not
  imported (an import never overrides a withdrawal recorded here).
* **known** -- nothing to change: subscribed there and active here (an older
  imported consent never replaces a native one), or withdrawn on both sides,
  or withdrawn there before the consent given here.
* **rejected** -- invalid address, unparseable date, unknown status or
  consent text version, malformed row: written to the report file with its
  line and reason; nothing of it is stored.

Writes are set-based: per batch one multi-row INSERT of subscriptions
(RETURNING their ids), one of ledger events whose hash chains are computed
here with ``ledger.event_row``, one executemany moving the chain heads, one
of suppressions; only withdrawals of subscriptions already here go through
the state machine one by one. Each batch commits with the import's cursor
(``job_state`` ``import:<list>:<source>:<sha256>``), so an interrupted run
(Ctrl-C) resumes after the last committed batch, and since a second run
finds every row known, importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import functools
import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

import psycopg
from sqlalchemy import JSON, String, any_, bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from optin.config import current_settings
from optin.consent import ledger, subscriptions
from optin.consent.addresses import address_hash
from optin.consent.lapse import proof_lapses_at
from optin.extensions import db
from optin.models import (
    ACTIVE_STATUSES,
    ConsentEvent,
    EventKind,
    JobState,
    MailingList,
    Subscription,
    SubscriptionStatus,
    Suppression,
    storable_text,
    utcnow,
)
from optin.privacy import audit
from optin.privacy.import_files import spreadsheet_safe
from optin.privacy.import_rows import CLEANED, ImportRow, Rejected, describe, parse_time

log = logging.getLogger(__name__)
S = SubscriptionStatus

IMPORTED, WITHDRAWN, SUPPRESSED, KNOWN, REJECTED = (
    "imported", "withdrawn", "suppressed", "known", "rejected")
#: The summary's categories, in its order, with what each means.
CATEGORIES = {
    IMPORTED: "imported (consent with its evidence, marked as imported)",
    KNOWN: "already known (nothing changed)",
    WITHDRAWN: "withdrawn (withdrawal recorded, address suppressed)",
    SUPPRESSED: "suppressed (withdrew here: not re-added)",
    REJECTED: "rejected (see the report file)",
}
BATCH = 5000
ATTEMPTS = 3


class Source(Protocol):
    """What the importer reads: rows in a stable order, and what names the source."""

    @property
    def source(self) -> str: ...  # mailchimp | csv | activecampaign

    @property
    def label(self) -> str: ...  # the file's name, or the ActiveCampaign list

    @property
    def sha256(self) -> str | None: ...  # of the file's bytes; None for ActiveCampaign

    def count(self) -> int: ...

    def rows(self) -> Iterator[ImportRow | Rejected]: ...


@dataclass
class Summary:
    source: str
    label: str
    list_slug: str
    sha256: str | None
    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    resumed_after: int | None = None
    report: Path | None = None
    rows: int = 0


@dataclass(frozen=True)
class Known:
    """A subscription of the address on the list, as far as precedence cares."""

    id: int | None
    status: str
    consent_at: datetime | None  # when its consent was given (None: not known)


def decide(row: ImportRow, known: list[Known], suppressed: bool) -> tuple[str, Known | None]:
    """What ``row`` means given the address's records here (see the module doc).

    Returns the category and, for a withdrawal of a subscription here, that subscription.
    Unsubscribe wins: a withdrawal of unknown time beats a consent; a consent of unknown
    time loses to any withdrawal.
    """
    active = next((k for k in known if k.status in ACTIVE_STATUSES), None)
    withdrew_here = suppressed or any(k.status not in ACTIVE_STATUSES for k in known)
    if not row.withdrawn:
        if active is not None:
            return KNOWN, None
        return (SUPPRESSED, None) if withdrew_here else (IMPORTED, None)
    if active is not None:
        newer = (active.consent_at is None or row.withdrawn_at is None
                 or row.withdrawn_at > active.consent_at)
        return (WITHDRAWN, active) if newer else (KNOWN, None)
    return (KNOWN, None) if withdrew_here else (WITHDRAWN, None)


def cursor_key(mailing_list: MailingList, source: Source) -> str:
    which = source.sha256 or source.label
    return f"import:{mailing_list.slug}:{source.source}:{which}"[:100]


def cursor(mailing_list: MailingList, source: Source) -> dict[str, Any] | None:
    """Where an interrupted import of this source stopped (None: none is unfinished)."""
    state = db.session.get(JobState, cursor_key(mailing_list, source))
    if state is None or state.value.get("finished") or not state.value.get("done"):
        return None
    return dict(state.value)


class _Report:
    """The rejected rows' file: file, line, reason (never the row's content)."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.written = path, 0
        self._handle: IO[str] | None = None  # opened at the first rejected row
        self.writer: Any = None

    def add(self, rejected: Rejected) -> None:
        if self.path is None:
            return
        if self._handle is None:
            self._handle = self.path.open("w", encoding="utf-8", newline="")
            self.writer = csv.writer(self._handle)
            self.writer.writerow(["file", "line", "reason"])
        assert self.writer is not None
        self.writer.writerow([spreadsheet_safe(rejected.member), rejected.line,
                              spreadsheet_safe(rejected.reason)])
        self.written += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


_END = object()


def _read_ahead(items: Iterator[Any], chunk: int = 500, chunks: int = 8) -> Generator[Any]:
    """``items`` as they come, read in a thread a few chunks ahead (memory: ``chunks``).

    Reading and checking a row is pure Python, and the importer's own thread spends
    much of a batch waiting for PostgreSQL (COPY, commit): the reader fills that
    wait. Order is kept (one reader, one queue). An error of the source is raised
    here, where it would have been; when the consumer stops (an error, Ctrl-C), the
    reader stops within 0.1 s and the source is closed, before this returns.
    """
    ahead: queue.Queue[Any] = queue.Queue(maxsize=chunks)
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        block: list[Any] = []
        try:
            for item in items:
                block.append(item)
                if len(block) >= chunk:
                    if not put(block):
                        return
                    block = []
            if put(block):
                put(_END)
        except BaseException as exc:  # handed to the consumer after the rows before it
            if put(block):
                put(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="import-reader", daemon=True)
    reader.start()
    try:
        while True:
            block = ahead.get()
            if block is _END:
                return
            if isinstance(block, BaseException):
                raise block
            yield from block
    finally:
        stop.set()
        reader.join()


def run(source: Source, mailing_list: MailingList, *, operator: str, dry_run: bool = False,
        batch: int = BATCH, report: Path | None = None, restart: bool = False,
        progress: Callable[[int], None] | None = None) -> Summary:
    """Import ``source`` into the list (see the module doc); resumes an interrupted run
    unless ``restart``. Raises what the source raises for an unreadable file."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    summary = Summary(source.source, source.label, mailing_list.slug, source.sha256, dry_run,
                      report=report)
    state = None if dry_run or restart else cursor(mailing_list, source)
    skip = int(state["done"]) if state else 0
    if state:
        summary.resumed_after = skip
        summary.counts.update(state.get("counts") or {})
    audit.record(operator, "import_dry_run" if dry_run else "import", details={
        "list": mailing_list.slug, "source": source.source, "file": source.label,
        "file_sha256": source.sha256, "resumed_after": summary.resumed_after})
    if not dry_run and state is None:  # the row each batch locks (see _Writer._write)
        key = cursor_key(mailing_list, source)
        if db.session.get(JobState, key) is None:
            db.session.add(JobState(name=key, value={"done": 0, "finished": False,
                                                     "counts": {}, "at": utcnow().isoformat()}))
    db.session.commit()
    writer = _Writer(mailing_list, source, operator, dry_run)
    rejects = _Report(report)
    pending: list[tuple[ImportRow, str]] = []
    in_batch: set[str] = set()
    position = 0
    # Closed explicitly, so an error here stops the reader thread now, not at collection.
    items = _read_ahead(source.rows())
    try:
        for item in items:
            position += 1
            if isinstance(item, ImportRow) and position > skip:
                try:
                    writer.resolve(item)
                except ValueError as exc:
                    item = Rejected(item.member, item.line, str(exc))
            if isinstance(item, Rejected):
                rejects.add(item)
                if position > skip:
                    summary.counts[REJECTED] += 1
            elif position > skip:
                digest = address_hash(item.email, writer.key)
                if digest in in_batch or len(pending) >= batch:
                    writer.flush(pending, summary, position - 1)
                    pending, in_batch = [], set()
                pending.append((item, digest))
                in_batch.add(digest)
            if progress is not None:
                progress(1)
        writer.flush(pending, summary, position, finished=True)
    finally:
        items.close()
        rejects.close()
    summary.rows = position
    if rejects.written == 0:
        summary.report = None
    log.info("import %s into list %s%s: %s", source.source, mailing_list.slug,
             " (dry run)" if dry_run else "", summary.counts)
    return summary


def _json_null_type() -> Any:
    # SQL NULL, not JSON null, for a row without fields (as every other writer stores it).
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


_SUB, _SUP = Subscription.__table__, Suppression.__table__
_SUB_COLUMNS = ("list_id", "status", "email", "email_hash", "locale", "first_name", "last_name",
                "source_url", "consent_text_id", "nonce", "created_at", "updated_at",
                "confirmed_at", "withdrawn_at", "withdrawal_origin", "retain_until",
                "ledger_seq", "imported_from", "ac_contact_id")


@functools.cache
def _insert_subscriptions() -> Any:
    values = {name: bindparam(name, type_=_SUB.c[name].type) for name in _SUB_COLUMNS}
    values["fields"] = bindparam("fields_json", type_=_json_null_type())
    return (_SUB.insert().values(values)
            .returning(_SUB.c.id, sort_by_parameter_order=True))


_EVENTS = ConsentEvent.__table__
_COPY_SUB = ("id", *(c for c in _SUB_COLUMNS), "fields", "ledger_head")
_COPY_EVENTS = ("subscription_id", "seq", "kind", "at", "ip", "user_agent", "consent_text_id",
                "origin", "details", "content_hash", "chain_hash")
_NEXT_IDS = text("SELECT nextval(pg_get_serial_sequence('subscription', 'id')) "
                 "FROM generate_series(1, :n)")


_LENGTHS = {table.name: {c.name: getattr(c.type, "length", None) for c in table.c}
            for table in (_SUB, _EVENTS)}
#: The subscription columns COPY gets from the source: made storable as StorableText would.
_FREE_TEXT = ("email", "locale", "first_name", "last_name", "source_url", "ac_contact_id")


@functools.cache
def _insert_suppressions(dialect: str) -> Any:
    statement = (pg_insert if dialect == "postgresql" else sqlite_insert)(_SUP)
    return statement.on_conflict_do_nothing(index_elements=[_SUP.c.list_id, _SUP.c.email_hash])


class _Writer:
    """Decides and writes one batch at a time, in its own transaction."""

    def __init__(self, mailing_list: MailingList, source: Source, operator: str,
                 dry_run: bool) -> None:
        settings = current_settings()
        self.list_id, self.slug = mailing_list.id, mailing_list.slug
        self.default_locale = mailing_list.default_locale
        self.source, self.operator, self.dry_run = source, operator, dry_run
        self.key, self.years = settings.hash_key, settings.proof_retention_years
        self.cursor_key = cursor_key(mailing_list, source)
        self.texts = {(t.locale, t.version): t.id for t in mailing_list.consent_texts}
        self.simulated: dict[str, Known] = {}  # a dry run's own effects, by address hash
        self.dialect = db.session.get_bind().dialect.name

    def resolve(self, row: ImportRow) -> None:
        """Pick the row's locale and consent text; raises ValueError for an unknown version."""
        row.locale = row.locale or self.default_locale
        version = row.evidence.get("consent_text_version")
        if version:
            text_id = self.texts.get((row.locale, int(version)))
            if text_id is None:
                raise ValueError(f"unknown consent text version {int(version)} "
                                 f"for locale {row.locale}")
            row.consent_text_id = text_id

    # -- one batch -----------------------------------------------------------------------

    def flush(self, pending: list[tuple[ImportRow, str]], summary: Summary, done: int,
              finished: bool = False) -> None:
        if self.dry_run:
            self._simulate(pending, summary)
            return
        before = dict(summary.counts)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._write(pending, summary)
                self._save_cursor(summary, done, finished)
                db.session.commit()
                return
            except IntegrityError:
                # A signup of one of these addresses committed first: decide again.
                db.session.rollback()
                summary.counts = dict(before)
                if attempt == ATTEMPTS:
                    raise
            except BaseException:
                try:
                    db.session.rollback()
                except Exception:
                    # Ctrl-C landed inside a statement (a COPY, a commit): the connection is
                    # in no state to roll back, and the batch is lost with it either way.
                    # Dropped, so the interruption (and where to resume) is what is said.
                    db.session().invalidate()
                summary.counts = dict(before)
                raise

    def _simulate(self, pending: list[tuple[ImportRow, str]], summary: Summary) -> None:
        known = self._known([d for _, d in pending])
        suppressed = self._suppressed([d for _, d in pending])
        for row, digest in pending:
            mine = self.simulated.get(digest)
            category, _ = decide(row, [mine] if mine else known.get(digest, []),
                                 digest in suppressed and mine is None)
            summary.counts[category] += 1
            if category == IMPORTED:
                self.simulated[digest] = Known(None, S.CONFIRMED, row.consent_at)
            elif category == WITHDRAWN:
                self.simulated[digest] = Known(None, S.UNSUBSCRIBED, None)

    def _write(self, pending: list[tuple[ImportRow, str]], summary: Summary) -> None:
        # Two runs of one import at once take turns per batch: whichever decides second
        # sees what the first wrote (else both would write a withdrawn record of one row).
        db.session.get(JobState, self.cursor_key, with_for_update=True, populate_existing=True)
        digests = [d for _, d in pending]
        known = self._known(digests)
        suppressed = self._suppressed(digests)
        new: list[tuple[ImportRow, str]] = []
        existing: list[tuple[ImportRow, Known]] = []
        for row, digest in pending:
            category, target = decide(row, known.get(digest, []), digest in suppressed)
            summary.counts[category] += 1
            if category == IMPORTED or (category == WITHDRAWN and target is None):
                new.append((row, digest))
            elif category == WITHDRAWN and target is not None:
                existing.append((row, target))
        if new:
            self._insert(new)
        for row, target in existing:
            if not self._withdraw(row, target):
                summary.counts[WITHDRAWN] -= 1
                summary.counts[KNOWN] += 1

    def _among(self, column: Any, digests: list[str]) -> Any:
        """``column`` is one of ``digests``: on PostgreSQL one array parameter (``= ANY``),
        which psycopg and SQLAlchemy handle at once where an IN of thousands of parameters
        took them longer than the query took the database."""
        if self.dialect == "postgresql":
            return column == any_(bindparam("digests", list(set(digests)),
                                            type_=ARRAY(String(64))))
        return column.in_(set(digests))

    def _known(self, digests: list[str]) -> dict[str, list[Known]]:
        rows = db.session.execute(
            select(_SUB.c.id, _SUB.c.email_hash, _SUB.c.status, _SUB.c.imported_from,
                   _SUB.c.confirmed_at, _SUB.c.created_at)
            .where(_SUB.c.list_id == self.list_id, self._among(_SUB.c.email_hash, digests))
        ).all()
        imported = [r.id for r in rows if r.imported_from and r.status in ACTIVE_STATUSES]
        consent_times: dict[int, datetime | None] = {}
        if imported:
            for sub_id, details in db.session.execute(
                select(ConsentEvent.subscription_id, ConsentEvent.details).where(
                    ConsentEvent.subscription_id.in_(imported),
                    ConsentEvent.kind == EventKind.CONSENT_IMPORTED)
            ):
                given = (details or {}).get("consent_at")
                consent_times[sub_id] = parse_time(given, "consent_at") if given else None
        found: dict[str, list[Known]] = {}
        for r in rows:
            if r.imported_from:
                at = consent_times.get(r.id)
            else:
                at = r.confirmed_at if r.status == S.CONFIRMED else r.created_at
            found.setdefault(r.email_hash, []).append(Known(r.id, r.status, at))
        return found

    def _suppressed(self, digests: list[str]) -> set[str]:
        return set(db.session.scalars(
            select(_SUP.c.email_hash).where(_SUP.c.list_id == self.list_id,
                                            self._among(_SUP.c.email_hash, digests))))

    def _origin(self, row: ImportRow, now: datetime) -> dict[str, Any]:
        return {"source": self.source.source, "file": self.source.label,
                "file_sha256": self.source.sha256, "operator": self.operator,
                "imported_at": now.isoformat(), **describe(row)}

    def _insert(self, rows: list[tuple[ImportRow, str]]) -> None:
        """New subscriptions with their ledger chains and suppressions, set-based: on
        PostgreSQL by COPY (ids drawn from the sequence first, so each chain is complete
        before its rows are written), elsewhere as multi-row INSERTs."""
        now = utcnow()
        if self.dialect == "postgresql":
            self._copy(rows, now)
        else:
            self._insert_rows(rows, now)

    def _values(self, row: ImportRow, digest: str, now: datetime) -> dict[str, Any]:
        withdrawn_at = min(row.withdrawn_at or now, now) if row.withdrawn else None
        keeps = not row.withdrawn  # a withdrawal deletes names and fields
        return {
            "list_id": self.list_id, "status": S.UNSUBSCRIBED if row.withdrawn else S.CONFIRMED,
            "email": row.email, "email_hash": digest, "locale": row.locale,
            "first_name": row.first_name if keeps else None,
            "last_name": row.last_name if keeps else None,
            "fields_json": row.fields if keeps else None,
            "source_url": row.evidence.get("source_url"),
            "consent_text_id": row.consent_text_id,
            "nonce": subscriptions.new_nonce(), "created_at": now, "updated_at": now,
            "confirmed_at": row.consent_at or now, "withdrawn_at": withdrawn_at,
            "withdrawal_origin": "import" if row.withdrawn else None,
            "retain_until": proof_lapses_at(withdrawn_at, self.years) if withdrawn_at else None,
            "ledger_seq": 0, "imported_from": self.source.source,
            "ac_contact_id": row.ac_contact_id,
        }

    def _chain(self, row: ImportRow, sub_id: int,
               now: datetime) -> list[tuple[dict[str, Any], str]]:
        """The new subscription's ledger events, hash-chained from the genesis, each with
        its details' JSON text (what COPY stores; serialized once, see ledger.chained_event)."""
        personal = {"first_name": row.first_name, "last_name": row.last_name,
                    "fields": row.fields}
        first = ledger.chained_event(
            sub_id, 0, None, EventKind.CONSENT_IMPORTED, origin="import", at=now,
            consent_text_id=row.consent_text_id,
            details={**self._origin(row, now), "email": row.email,  # as a signup records it
                     "consent_at": row.consent_at.isoformat() if row.consent_at else None,
                     "entered_sha256": subscriptions.entered_digest(personal)})
        if not row.withdrawn:
            return [first]
        event = first[0]
        return [first, ledger.chained_event(
            sub_id, event["seq"], event["chain_hash"],
            EventKind.BOUNCED if row.status == CLEANED else EventKind.UNSUBSCRIBED,
            origin="import", at=now, details={
                "was": "confirmed", "source": self.source.source,
                "status_in_source": row.status,
                "reported_at": row.evidence.get("withdrawn_time")})]

    def _suppression(self, digest: str, now: datetime) -> dict[str, Any]:
        return {"list_id": self.list_id, "email_hash": digest, "reason": "import",
                "created_at": now}

    def _insert_rows(self, rows: list[tuple[ImportRow, str]], now: datetime) -> None:
        """INSERT … RETURNING the ids, then the events and the chain heads."""
        params = [self._values(row, digest, now) for row, digest in rows]
        ids = list(db.session.execute(_insert_subscriptions(), params).scalars())
        events: list[dict[str, Any]] = []
        heads: list[dict[str, Any]] = []
        for (row, _), sub_id in zip(rows, ids, strict=True):
            chain = [event for event, _ in self._chain(row, sub_id, now)]
            events.extend(chain)
            heads.append(ledger.head_params(chain[-1]))
        db.session.execute(insert(ConsentEvent.__table__), events)
        db.session.execute(ledger.MOVE_HEAD, heads)
        suppress = [self._suppression(digest, now) for row, digest in rows if row.withdrawn]
        if suppress:
            db.session.execute(_insert_suppressions(self.dialect), suppress)

    def _copy(self, rows: list[tuple[ImportRow, str]], now: datetime) -> None:
        """PostgreSQL: COPY the subscriptions (heads included) and their events."""
        ids = list(db.session.scalars(_NEXT_IDS, {"n": len(rows)}))
        events: list[list[Any]] = []
        raw = db.session.connection().connection.dbapi_connection
        assert raw is not None
        try:
            with raw.cursor() as cur:  # type: ignore[attr-defined]
                # Each subscription row goes out as soon as its chain is built, so the
                # database stores the rows while the next chains are hashed.
                with cur.copy(f"COPY subscription ({', '.join(_COPY_SUB)}) FROM STDIN") as copy:
                    for (row, digest), sub_id in zip(rows, ids, strict=True):
                        chain = self._chain(row, sub_id, now)
                        copy.write_row(self._copy_subscription(row, digest, sub_id, chain, now))
                        # chained_event made every value storable (and cut to its column)
                        # before hashing it, and gives the details as the JSON it hashed.
                        events.extend([*(e[name] for name in _COPY_EVENTS[:8]), details_text,
                                       e["content_hash"], e["chain_hash"]]
                                      for e, details_text in chain)
                with cur.copy(f"COPY consent_event ({', '.join(_COPY_EVENTS)}) FROM STDIN") as copy:
                    for record in events:
                        copy.write_row(record)
        except psycopg.errors.IntegrityError as exc:  # a concurrent signup of one address
            raise IntegrityError("COPY subscription", None, exc) from exc
        suppress = [self._suppression(digest, now) for row, digest in rows if row.withdrawn]
        if suppress:
            db.session.execute(_insert_suppressions(self.dialect), suppress)

    def _copy_subscription(self, row: ImportRow, digest: str, sub_id: int,
                           chain: list[tuple[dict[str, Any], str]], now: datetime) -> list[Any]:
        """The subscription's COPY record, its chain's head included."""
        values = self._values(row, digest, now)
        values.update(id=sub_id, ledger_seq=chain[-1][0]["seq"],
                      ledger_head=chain[-1][0]["chain_hash"])
        fields = values.pop("fields_json")
        values["fields"] = None if fields is None else ledger.storable_details(fields)[1]
        for name in _FREE_TEXT:  # what a source gave; the rest is ours, storable already
            if values[name] is not None:
                values[name] = storable_text(values[name], _LENGTHS["subscription"][name])
        return [values[name] for name in _COPY_SUB]

    def _withdraw(self, row: ImportRow, target: Known) -> bool:
        """Withdraw a subscription here through the state machine, under its row lock."""
        sub = db.session.get(Subscription, target.id, with_for_update=True,
                             populate_existing=True)
        if sub is None or sub.status not in ACTIVE_STATUSES:
            return False
        now = utcnow()
        subscriptions.withdraw(
            sub, origin="import", at=now, goodbye=False,
            kind=EventKind.BOUNCED if row.status == CLEANED else EventKind.UNSUBSCRIBED,
            details={**self._origin(row, now),
                     "reported_at": row.evidence.get("withdrawn_time")})
        return True

    def _save_cursor(self, summary: Summary, done: int, finished: bool) -> None:
        state = db.session.get(JobState, self.cursor_key, with_for_update=True)
        if state is None:
            state = JobState(name=self.cursor_key, value={})
            db.session.add(state)
        state.value = {"done": done, "finished": finished, "counts": dict(summary.counts),
                       "source": self.source.source, "file": self.source.label,
                       "operator": self.operator, "at": utcnow().isoformat()}
