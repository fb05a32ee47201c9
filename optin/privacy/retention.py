"""The job that minimizes what has lapsed (the dates themselves: ``consent.lapse``).

The job (:func:`run`) works set-based: every batch is a handful of UPDATE and
INSERT … SELECT statements over up to ``batch`` subscriptions, committed on
its own so row locks are held for one batch only. The batch is chosen with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so runs on several hosts share the
work without doing any of it twice and without waiting on one another; on
SQLite the claiming UPDATE is the first statement of each transaction, so
SQLite's single writer serializes the runs and the ``minimized_at IS NULL``
condition makes the second one a no-op.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    String,
    and_,
    any_,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from optin.config import current_settings
from optin.consent import (
    checkpoints,
    confirmations,
    intake,
    ledger,
    mailcopies,
    relink,
    resends,
    signups,
    withdrawals,
)
from optin.extensions import db
from optin.models import (
    ConsentEvent,
    OutboxItem,
    RetentionRun,
    Subscription,
    SubscriptionStatus,
    UTCDateTime,
    utcnow,
)

log = logging.getLogger(__name__)

# --- the minimization job -------------------------------------------------------------

S = SubscriptionStatus
DEFAULT_BATCH = 1000

# The two rules, named by what lapsed. Both are "retain_until has passed";
# the name says which retention period it was.
UNCONFIRMED = "unconfirmed_signup"  # never confirmed: OPTIN_PENDING_RETENTION_DAYS
WITHDRAWN = "withdrawn_consent"  # confirmed, then withdrawn or erased: proof period over
RULES = (UNCONFIRMED, WITHDRAWN)

# Event details that survive minimization: kinds of things, versions and hashes, never
# a value a person typed or that names them. Anything else is dropped, so a key someone
# adds later is removed by default (defined with the ledger, which verifies by it).
KEPT_DETAIL_KEYS = ledger.KEPT_DETAIL_KEYS


@dataclass
class RunReport:
    """What a run did (or, dry, would do): counts per rule, as recorded in ``retention_run``."""

    as_of: datetime
    dry_run: bool
    run_id: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: {r: 0 for r in RULES})
    failed: str | None = None  # the error's type, when the run failed

    @property
    def total(self) -> int:
        return sum(self.counts.get(r, 0) for r in RULES)


class sha256_hex(FunctionElement):  # noqa: N801 - reads like the SQL function it is
    """Hex SHA-256 of a UTF-8 text, in SQL (``optin_sha256`` is registered on SQLite)."""

    type = String()
    inherit_cache = True
    name = "sha256_hex"


@compiles(sha256_hex, "postgresql")
def _sha256_pg(element: sha256_hex, compiler: Any, **kw: Any) -> str:
    return f"encode(sha256(convert_to({compiler.process(element.clauses, **kw)}, 'UTF8')), 'hex')"


@compiles(sha256_hex)
def _sha256_other(element: sha256_hex, compiler: Any, **kw: Any) -> str:
    return f"optin_sha256({compiler.process(element.clauses, **kw)})"


def _py_sha256(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


def _postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def _register_sqlite_functions() -> None:
    """SQLite has no SHA-256; lend it Python's (on this transaction's connection)."""
    if not _postgres():
        raw = db.session.connection().connection.dbapi_connection
        raw.create_function("optin_sha256", 1, _py_sha256, deterministic=True)  # type: ignore[union-attr]


_sub = Subscription.__table__
_event = ConsentEvent.__table__


def _lapsed(as_of: datetime) -> ColumnElement[bool]:
    """What a run minimizes. A confirmed subscription is excluded twice over: its
    ``retain_until`` is NULL, and its status is not in the list."""
    return and_(
        _sub.c.retain_until <= as_of,
        _sub.c.minimized_at.is_(None),
        _sub.c.status.in_((S.PENDING, S.UNSUBSCRIBED)),
    )


def _rule() -> ColumnElement[str]:
    return case((_sub.c.confirmed_at.is_(None), UNCONFIRMED), else_=WITHDRAWN)


def count_lapsed(as_of: datetime) -> dict[str, int]:
    """Subscriptions each rule would minimize at ``as_of`` (one grouped query)."""
    rule = _rule().label("rule")
    rows = db.session.execute(
        select(rule, func.count()).select_from(_sub).where(_lapsed(as_of)).group_by(rule)
    ).all()
    counts = {r: 0 for r in RULES}
    counts.update({name: n for name, n in rows})
    return counts


# Placeholders that cannot occur in real content, swapped for SQL expressions.
_SUB_ID, _SEQ, _RULE = -918273645, -918273646, "@@optin-rule@@"


def _minimized_content(at: datetime, run_id: int, seq: ColumnElement[Any]) -> ColumnElement[str]:
    """The ``minimized`` event's canonical JSON, as SQL, per subscription row.

    Built from :func:`ledger.canonical_content` itself (with placeholders), so
    the hash SQL computes is the hash ``ledger.verify`` recomputes.
    """
    template = ledger.canonical_content(ConsentEvent(
        subscription_id=_SUB_ID, seq=_SEQ, kind="minimized", at=at, ip=None, user_agent=None,
        consent_text_id=None, origin="retention", details={"rule": _RULE, "run": run_id},
    ))
    slots = {str(_SUB_ID): cast(_sub.c.id, String), str(_SEQ): cast(seq, String), _RULE: _rule()}
    expr: ColumnElement[str] | None = None
    for piece in re.split(f"({_SUB_ID}|{_SEQ}|{re.escape(_RULE)})", template):
        part = slots.get(piece, literal(piece, String)) if piece else None
        if part is not None:
            expr = part if expr is None else expr.concat(part)
    assert expr is not None
    return expr


def _chain_head(at: datetime, run_id: int) -> ColumnElement[str]:
    """New chain head after appending the ``minimized`` event (see ``ledger.chain_hash``)."""
    seq = _sub.c.ledger_seq + 1
    return sha256_hex(
        func.coalesce(_sub.c.ledger_head, ledger.GENESIS)
        .concat("|").concat(cast(seq, String)).concat("|")
        .concat(sha256_hex(_minimized_content(at, run_id, seq)))
    )


# The key list is built from the constants above, never from input.
_KEPT_KEYS_SQL = ", ".join(f"'{k}'" for k in KEPT_DETAIL_KEYS)
_KEPT_DETAILS_PG = (
    "CASE WHEN jsonb_typeof(consent_event.details) = 'object' THEN "  # noqa: S608
    "(SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb) "
    f"FROM jsonb_each(consent_event.details) AS e WHERE e.key IN ({_KEPT_KEYS_SQL})) "
    "ELSE '{}'::jsonb END"
)
# json_each hands booleans back as 0/1; put them back as JSON true/false.
_KEPT_DETAILS_SQLITE = (
    "(SELECT coalesce(json_group_object(e.key, CASE e.type WHEN 'true' THEN json('true') "  # noqa: S608
    "WHEN 'false' THEN json('false') ELSE e.value END), '{}') "
    f"FROM json_each(consent_event.details) AS e WHERE e.key IN ({_KEPT_KEYS_SQL}))"
)


def _kept_details() -> ColumnElement[Any]:
    """``consent_event.details`` reduced to :data:`KEPT_DETAIL_KEYS`, in SQL."""
    return literal_column(_KEPT_DETAILS_PG if _postgres() else _KEPT_DETAILS_SQLITE)


def _minimize_batch(as_of: datetime, run_id: int, batch: int,
                    after: tuple[datetime, int] | None) -> tuple[dict[str, int], int,
                                                                 tuple[datetime, int] | None]:
    """Minimize one batch in one transaction; return counts, events redacted, cursor.

    The cursor (``retain_until``, ``id`` of the last row) keeps each batch from
    rescanning rows an earlier batch of this run skipped because another
    transaction held them; those are left for that transaction or the next run.
    """
    now = utcnow()
    _register_sqlite_functions()
    candidates = select(_sub.c.id).where(_lapsed(as_of))
    if after is not None:
        ru = literal(after[0], UTCDateTime())
        candidates = candidates.where(or_(_sub.c.retain_until > ru,
                                          and_(_sub.c.retain_until == ru, _sub.c.id > after[1])))
    candidates = (candidates.order_by(_sub.c.retain_until, _sub.c.id).limit(batch)
                  .with_for_update(skip_locked=True))
    # 1. Claim and minimize the subscriptions, advancing their chain heads.
    claimed = db.session.execute(
        update(_sub)
        .where(_sub.c.id.in_(candidates.scalar_subquery()), _sub.c.minimized_at.is_(None))
        .values(
            status=S.MINIMIZED, minimized_at=now, updated_at=now,
            email=null(), first_name=null(), last_name=null(), fields=null(),
            source_url=null(), ac_contact_id=null(),
            ledger_seq=_sub.c.ledger_seq + 1, ledger_head=_chain_head(now, run_id),
        )
        .returning(_sub.c.id, _sub.c.retain_until, _sub.c.confirmed_at)
    ).all()
    if not claimed:
        db.session.rollback()
        return {}, 0, None
    ids = [row.id for row in claimed]
    # PostgreSQL: the ids as one array parameter; a thousand-item IN list cost more
    # to bind and plan than the statements took to run.
    in_batch = ((lambda column: column == any_(literal(ids, ARRAY(BigInteger()))))
                if _postgres() else (lambda column: column.in_(ids)))
    counts = {UNCONFIRMED: sum(r.confirmed_at is None for r in claimed)}
    counts[WITHDRAWN] = len(claimed) - counts[UNCONFIRMED]
    # 2. Strip the personal content of their events; kinds, dates and hashes stay.
    redacted: int = db.session.execute(
        update(_event)
        .where(in_batch(_event.c.subscription_id), _event.c.redacted_at.is_(None))
        .values(ip=null(), user_agent=null(), details=_kept_details(), redacted_at=now)
    ).rowcount  # type: ignore[attr-defined]  # an UPDATE answers a CursorResult
    # 3. Append the "minimized" event, whose hashes step 1 already chained.
    details = case(*((_sub.c.confirmed_at.is_(None) if rule == UNCONFIRMED else
                      _sub.c.confirmed_at.is_not(None),
                      literal(f'{{"rule":"{rule}","run":{run_id}}}')) for rule in RULES))
    db.session.execute(insert(_event).from_select(
        ["subscription_id", "seq", "kind", "at", "origin", "details", "content_hash", "chain_hash"],
        select(
            _sub.c.id, _sub.c.ledger_seq, literal("minimized"), literal(now, UTCDateTime()),
            literal("retention"), cast(details, JSONB) if _postgres() else details,
            sha256_hex(_minimized_content(now, run_id, _sub.c.ledger_seq)), _sub.c.ledger_head,
        ).where(in_batch(_sub.c.id)),
    ))
    # 4. What each signup entered goes with the subscription's copy of it.
    signups.minimize(in_batch)
    mailcopies.minimize(in_batch)
    # 5. Finished outbox rows may quote the address in an error or a payload.
    db.session.execute(
        update(OutboxItem.__table__)
        .where(in_batch(OutboxItem.__table__.c.subscription_id), OutboxItem.status != "pending")
        .values(payload={}, last_error=null())
    )
    db.session.commit()
    last = max(claimed, key=lambda r: (r.retain_until, r.id))
    return counts, redacted, (last.retain_until, last.id)


def run(as_of: datetime | None = None, *, dry_run: bool = False,
        batch: int = DEFAULT_BATCH) -> RunReport:
    """Minimize everything lapsed at ``as_of`` (default: now) and record the run.

    Idempotent: a second run at the same ``as_of`` finds nothing. A dry run
    counts per rule, records that it looked, and changes nothing else. A run that
    fails is recorded as failed (what its committed batches did, and the error's
    type) before the error goes on to the caller (the worker retries the job soon).
    """
    as_of = as_of or utcnow()
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    db.session.rollback()  # start from a clean transaction
    report = RunReport(as_of=as_of, dry_run=dry_run)
    record = RetentionRun(started_at=utcnow(), as_of=as_of, dry_run=dry_run,
                          host=socket.gethostname()[:200], counts={})
    db.session.add(record)
    db.session.commit()
    report.run_id = record.id
    if dry_run:
        report.counts = count_lapsed(as_of)
    else:
        progress = {"events_redacted": 0, "batches": 0}
        try:
            _minimize_all(as_of, record.id, batch, report, progress)
            # Signups that never reached the state machine keep no evidence longer
            # than an unconfirmed signup would.
            progress["intake_rows_blanked"] = intake.minimize_stale(
                as_of, current_settings().pending_retention_days)
            progress["intake_rows_blanked"] += confirmations.minimize_stale(
                as_of, current_settings().pending_retention_days)
            progress["intake_rows_blanked"] += relink.minimize_stale(
                as_of, current_settings().pending_retention_days)
            progress["intake_rows_blanked"] += resends.minimize_stale(
                as_of, current_settings().pending_retention_days)
            progress["intake_rows_blanked"] += withdrawals.minimize_stale(
                as_of, current_settings().pending_retention_days)
            db.session.commit()
        except Exception as exc:
            db.session.rollback()
            report.counts.update(progress)
            report.failed = type(exc).__name__
            _finish(report)
            log.error("retention run %s failed after %s batches: %s", report.run_id,
                      progress["batches"], type(exc).__name__)
            raise
        report.counts.update(progress)
    _finish(report)
    db.session.expire_all()
    log.info("retention run %s as of %s%s: %s", report.run_id, as_of.isoformat(),
             " (dry run)" if dry_run else "", report.counts)
    if report.total:  # the chains it extended are anchored at once, not in ten minutes
        checkpoints.after_change(f"retention run {report.run_id}")
    return report


def _minimize_all(as_of: datetime, run_id: int, batch: int, report: RunReport,
                  progress: dict[str, int]) -> None:
    """Every lapsed batch, each committed on its own; ``progress`` counts what committed."""
    cursor: tuple[datetime, int] | None = None
    while True:
        counts, redacted, cursor = _minimize_batch(as_of, run_id, batch, cursor)
        if cursor is None:
            return
        progress["batches"] += 1
        progress["events_redacted"] += redacted
        for rule, n in counts.items():
            report.counts[rule] += n


def _finish(report: RunReport) -> None:
    finished = db.session.get(RetentionRun, report.run_id)
    assert finished is not None
    finished.counts = {**report.counts, **({"failed": report.failed} if report.failed else {})}
    finished.finished_at = utcnow()
    db.session.commit()


def recent_runs(limit: int = 20) -> list[RetentionRun]:
    """The newest runs, dry runs included (marked ``dry_run``): what was done and looked at."""
    return list(db.session.scalars(
        select(RetentionRun).order_by(RetentionRun.id.desc()).limit(limit)))


def last_run() -> RetentionRun | None:
    """The newest run that minimized (a dry run changed nothing, so it is not the last run)."""
    return db.session.scalars(
        select(RetentionRun).where(RetentionRun.dry_run.is_(False))
        .order_by(RetentionRun.id.desc()).limit(1)).first()
