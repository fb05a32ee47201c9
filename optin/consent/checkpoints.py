"""Signed ledger checkpoints: what the database says, anchored where it cannot be rewritten.

The hash chains (``consent.ledger``) live in the database they protect: someone
who can write to it can alter an event and recompute every hash after it, or
delete a subscription with its events. A checkpoint is a Merkle root over
every chain head (``consent.merkle``), signed with an Ed25519 key that lives
outside the database (OPTIN_LEDGER_SIGNING_KEY), optionally time-stamped by an
RFC 3161 authority, and appended to a file (and the log) the database's admin
cannot rewrite (``consent.checkpoint_file``).

Chains only ever grow (minimization appends an event and keeps every hash), so
a checkpoint's heads stay in the chains for good: :func:`verify` checks that
each head the newest published checkpoint signed is still an event of its
chain, with the same chain hash. The database keeps which head each checkpoint
took (``ledger_checkpoint_leaf``, a row only when a head moved); whether that
record was tampered with is settled by the signed root it must reproduce.
:func:`make` refuses to build on a database that no longer reproduces the
previous checkpoint, and never adopts a chain that does not extend the head
it saw before, so tampering cannot be laundered into a newer checkpoint.
"""

from __future__ import annotations

import base64
import json
import logging
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import and_, func, insert, literal, or_, select, update

from optin.config import Settings, current_settings
from optin.consent import checkpoint_file, merkle
from optin.consent.checkpoint_file import Published
from optin.extensions import db
from optin.models import (
    ConsentEvent,
    JobState,
    LedgerCheckpoint,
    LedgerCheckpointLeaf,
    Subscription,
    utcnow,
)

log = logging.getLogger(__name__)

_LEAF, _SUB, _EVENT = (LedgerCheckpointLeaf.__table__, Subscription.__table__,
                       ConsentEvent.__table__)
_LOCK = "ledger:checkpoint"


class CheckpointsOff(Exception):
    """No signing key is configured (OPTIN_LEDGER_SIGNING_KEY)."""


class CheckpointRefused(Exception):
    """The database no longer matches the checkpoint a new one would build on."""


# --- keys ------------------------------------------------------------------------------


def signing_key(settings: Settings | None = None) -> Ed25519PrivateKey:
    seed = (settings or current_settings()).ledger_key_seed
    if seed is None:
        raise CheckpointsOff("OPTIN_LEDGER_SIGNING_KEY is unset: no checkpoints are signed")
    return checkpoint_file.private_key(seed)


def trusted_keys(settings: Settings | None = None) -> dict[str, Ed25519PublicKey]:
    """The current key's public half and OPTIN_LEDGER_PUBLIC_KEYS, by key id."""
    settings = settings or current_settings()
    keys = [Ed25519PublicKey.from_public_bytes(raw) for raw in settings.ledger_past_keys]
    if settings.ledger_key_seed is not None:
        keys.append(checkpoint_file.private_key(settings.ledger_key_seed).public_key())
    return checkpoint_file.keyring(keys)


def published(record: LedgerCheckpoint) -> Published:
    """The database's copy as the line it was published as."""
    return Published(statement=json.loads(record.statement), signature=record.signature,
                     public_key=_public_key_of(record), tsa_token=record.tsa_token)


def _public_key_of(record: LedgerCheckpoint) -> str:
    key = trusted_keys().get(record.key_id)
    return checkpoint_file.encode_key(checkpoint_file.public_bytes(key)) if key else ""


# --- leaves ----------------------------------------------------------------------------


def _heads(n: int) -> Any:
    """Checkpoint ``n``'s heads as a subquery: each subscription's newest leaf row up to ``n``."""
    ranked = select(
        _LEAF.c.subscription_id, _LEAF.c.seq, _LEAF.c.chain_hash,
        func.row_number().over(partition_by=_LEAF.c.subscription_id,
                               order_by=_LEAF.c.checkpoint_id.desc()).label("rank"),
    ).where(_LEAF.c.checkpoint_id <= n).subquery()
    return (select(ranked.c.subscription_id, ranked.c.seq, ranked.c.chain_hash)
            .where(ranked.c.rank == 1).subquery())


def leaves(n: int) -> list[tuple[int, int, str]]:
    """Checkpoint ``n``'s chain heads as the database records them, by subscription id."""
    heads = _heads(n)
    rows = db.session.execute(select(heads).order_by(heads.c.subscription_id)).all()
    return [(r.subscription_id, r.seq, r.chain_hash) for r in rows]


def tree_of(heads: list[tuple[int, int, str]]) -> list[list[bytes]]:
    return merkle.levels([merkle.leaf_hash(merkle.leaf_data(*h)) for h in heads])


@lru_cache(maxsize=1)
def _cached_tree(database: str, n: int, root: str) -> tuple[array[int], list[bytes]]:
    """A published checkpoint's subscription ids (in leaf order) and its packed tree, kept
    for the next proof (an audit export asks for thousands): about 72 bytes a chain."""
    heads = leaves(n)
    return array("q", (h[0] for h in heads)), merkle.packed(tree_of(heads))


# --- making one ------------------------------------------------------------------------


@dataclass
class Made:
    """What :func:`make` did."""

    record: LedgerCheckpoint
    moved: int  # chain heads that moved since the checkpoint before
    held: list[int] = field(default_factory=list)  # chains that did not extend: kept as signed
    publish_problems: list[str] = field(default_factory=list)


def make(*, reason: str = "manual") -> Made:
    """Sign a checkpoint of every chain head now, store it, publish it; return it.

    In its own transaction, serialized with other makers by a row lock. Raises
    :class:`CheckpointsOff` without a key and :class:`CheckpointRefused` when the
    database no longer reproduces the previous checkpoint (or lost checkpoints
    the file has): then ``optin ledger verify`` says what changed.
    """
    settings = current_settings()
    key = signing_key(settings)
    db.session.rollback()
    _lock()
    previous = db.session.scalars(
        select(LedgerCheckpoint).order_by(LedgerCheckpoint.id.desc()).limit(1)).first()
    try:
        _check_previous(previous, settings)
    except CheckpointRefused:
        db.session.rollback()  # let go of the lock (and SQLite's writer lock) at once
        raise
    n = previous.id + 1 if previous else 1
    now = utcnow()
    record = LedgerCheckpoint(id=n, created_at=now, tree_size=0, root="", key_id="",
                              statement="", signature="")
    db.session.add(record)
    db.session.flush()
    held = _chains_not_extending(n - 1) if previous else []
    moved = _record_moved_heads(n, held)
    heads = leaves(n)
    statement: dict[str, Any] = {
        "v": checkpoint_file.VERSION, "n": n, "at": now.isoformat(timespec="microseconds"),
        "tree_size": len(heads), "root": merkle.root(tree_of(heads)),
        "prev": checkpoint_file.statement_hash(_statement(previous)) if previous else None,
        "key_id": checkpoint_file.key_id(key.public_key()),
    }
    entry = checkpoint_file.sign(statement, key)
    record.tree_size, record.root, record.key_id = len(heads), statement["root"], statement["key_id"]
    record.statement = checkpoint_file.canonical(statement).decode()
    record.signature = entry.signature
    if settings.ledger_tsa_url:
        record.tsa_token = _timestamp(settings.ledger_tsa_url, statement)
    db.session.commit()
    if held:
        log.error("ledger checkpoint %s: %s chains do not extend the heads checkpoint %s signed "
                  "(subscriptions %s): their signed heads are kept; run `optin ledger verify`",
                  n, len(held), n - 1, ", ".join(map(str, held[:20])))
    made = Made(record=record, moved=moved, held=held)
    made.publish_problems = publish_pending(settings)
    log.info("ledger checkpoint %s (%s): %s chains, %s moved, root %s", n, reason, len(heads),
             moved, statement["root"])
    return made


def _lock() -> None:
    """One maker at a time (the row lock; SQLite's writer lock does the same there)."""
    state = db.session.get(JobState, _LOCK, with_for_update=True)
    if state is None:
        db.session.add(JobState(name=_LOCK, value={}))
        db.session.flush()
    else:
        state.value = {**state.value, "locked_at": utcnow().isoformat()}
        db.session.flush()


def _statement(record: LedgerCheckpoint) -> dict[str, Any]:
    statement: dict[str, Any] = json.loads(record.statement)
    return statement


def _check_previous(previous: LedgerCheckpoint | None, settings: Settings) -> None:
    """Build only on a previous checkpoint that is genuine and that the database still
    reproduces, and only if the published file has nothing newer."""
    on_file = checkpoint_file.last_published(settings.ledger_checkpoint_file)
    if on_file is not None and (previous is None or on_file.n > previous.id):
        raise CheckpointRefused(
            f"the published file has checkpoint {on_file.n} but the database "
            f"{'none' if previous is None else f'only up to {previous.id}'}: run `optin ledger verify`")
    if previous is None:
        return
    entry = published(previous)
    problems = checkpoint_file.check_entry(entry, trusted_keys(settings))
    heads = leaves(previous.id)
    if not problems and (len(heads) != entry.statement["tree_size"]
                         or merkle.root(tree_of(heads)) != entry.statement["root"]):
        problems = [f"the database no longer reproduces checkpoint {previous.id}'s root"]
    if problems:
        raise CheckpointRefused("; ".join(problems) + ": run `optin ledger verify`")


def _chains_not_extending(n: int) -> list[int]:
    """Subscriptions whose chain no longer holds, at the signed seq, the head checkpoint
    ``n`` took (rewritten, or cut back). Deleted ones are left to :func:`verify`."""
    signed = _heads(n)
    return list(db.session.scalars(
        select(signed.c.subscription_id)
        .join(_SUB, _SUB.c.id == signed.c.subscription_id)
        .outerjoin(_EVENT, and_(_EVENT.c.subscription_id == signed.c.subscription_id,
                                _EVENT.c.seq == signed.c.seq))
        .where(or_(_EVENT.c.chain_hash.is_(None), _EVENT.c.chain_hash != signed.c.chain_hash))
        .order_by(signed.c.subscription_id)))


def _record_moved_heads(n: int, held: list[int]) -> int:
    """Store a leaf row for each chain head that moved since its newest leaf row.

    The head is taken from the chain itself (the event at the subscription's
    ``ledger_seq``) and only where the subscription's ``ledger_head`` agrees, so a
    head moved by hand to a hash no event has is never signed.
    """
    newest_seq = (select(_LEAF.c.seq).where(_LEAF.c.subscription_id == _SUB.c.id)
                  .order_by(_LEAF.c.checkpoint_id.desc()).limit(1).scalar_subquery())
    newest_hash = (select(_LEAF.c.chain_hash).where(_LEAF.c.subscription_id == _SUB.c.id)
                   .order_by(_LEAF.c.checkpoint_id.desc()).limit(1).scalar_subquery())
    moved = (
        select(literal(n), _SUB.c.id, _SUB.c.ledger_seq, _EVENT.c.chain_hash)
        .select_from(_SUB)
        .join(_EVENT, and_(_EVENT.c.subscription_id == _SUB.c.id,
                           _EVENT.c.seq == _SUB.c.ledger_seq,
                           _EVENT.c.chain_hash == _SUB.c.ledger_head))
        .where(or_(newest_seq.is_(None), newest_seq != _SUB.c.ledger_seq,
                   newest_hash != _EVENT.c.chain_hash))
    )
    if held:
        moved = moved.where(_SUB.c.id.not_in(held))
    db.session.execute(insert(_LEAF).from_select(
        ["checkpoint_id", "subscription_id", "seq", "chain_hash"], moved))
    # Counted, not the statement's rowcount (which psycopg does not give for INSERT … SELECT).
    return int(db.session.scalar(select(func.count()).select_from(_LEAF)
                                 .where(_LEAF.c.checkpoint_id == n)) or 0)


def _timestamp(url: str, statement: dict[str, Any]) -> str | None:
    """The TSA's token over the statement; None (logged) when the TSA fails: the
    checkpoint is signed and published all the same, only without a time-stamp."""
    from optin.consent import timestamps  # only with a TSA (see checkpoint_file.check_entry)

    try:
        token = timestamps.request_token(url, checkpoint_file.canonical(statement))
    except timestamps.TimestampError as exc:
        log.warning("ledger checkpoint %s: no RFC 3161 time-stamp: %s", statement["n"], exc)
        return None
    return base64.b64encode(token).decode()


def publish_pending(settings: Settings | None = None) -> list[str]:
    """Append every checkpoint not yet published to the file and the log, in order."""
    settings = settings or current_settings()
    path = settings.ledger_checkpoint_file
    problems = []
    for record in db.session.scalars(select(LedgerCheckpoint).where(
            LedgerCheckpoint.published_at.is_(None)).order_by(LedgerCheckpoint.id)).all():
        entry = published(record)
        log.info("ledger checkpoint %s published: %s", record.id, entry.line())
        try:
            checkpoint_file.append(path, entry)
        except OSError as exc:
            problems.append(f"checkpoint {record.id} not written to {path}: {exc.strerror}")
            log.error("ledger checkpoint %s could not be written to the checkpoint file: %s "
                      "(tried again with the next one)", record.id, exc.strerror)
            break
        db.session.execute(update(LedgerCheckpoint.__table__)
                           .where(LedgerCheckpoint.__table__.c.id == record.id)
                           .values(published_at=utcnow()))
        db.session.commit()
    return problems


def interval() -> timedelta:
    """How often the workers sign a checkpoint (OPTIN_LEDGER_CHECKPOINT_MINUTES; 0 = never)."""
    minutes = current_settings().ledger_checkpoint_minutes
    return timedelta(minutes=minutes) if minutes else timedelta(days=36500)  # 0 = off


_warned_off = False


def periodic() -> None:
    """The worker's job: a checkpoint per OPTIN_LEDGER_CHECKPOINT_MINUTES (none without a key)."""
    global _warned_off
    if current_settings().ledger_key_seed is None:
        if not _warned_off:
            log.warning("OPTIN_LEDGER_SIGNING_KEY is unset: no ledger checkpoints are signed, so "
                        "a rewrite of the database behind the service's back goes unnoticed")
            _warned_off = True
        return
    make(reason="periodic")


def after_change(reason: str) -> None:
    """A checkpoint right after a bulk change (a retention run); a failure is logged,
    never the caller's: the next periodic checkpoint catches up."""
    if current_settings().ledger_key_seed is None:
        return
    try:
        make(reason=reason)
    except Exception as exc:
        db.session.rollback()
        log.error("ledger checkpoint after %s failed: %s: %s", reason, type(exc).__name__, exc)


# --- checking the database against the published checkpoints ---------------------------


@dataclass
class Verification:
    """What the published checkpoints say about the database."""

    path: Path
    checkpoints: int = 0  # published checkpoints whose signature verifies
    newest: Published | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify(path: Path | None = None, *, every: bool = False) -> Verification:
    """Check the database against the checkpoints published in ``path`` (default: the
    configured file), never against the database's own copy.

    Every line's signature (with a trusted key: the current one or
    OPTIN_LEDGER_PUBLIC_KEYS) and time-stamp, the sequence of lines, then the
    newest checkpoint (``every``: each one) against the database: each chain head it
    signed must still be an event of its chain with the same chain hash.
    """
    settings = current_settings()
    report = Verification(path=path or settings.ledger_checkpoint_file)
    if not report.path.is_file():
        recorded = db.session.scalar(select(func.count()).select_from(LedgerCheckpoint).where(
            LedgerCheckpoint.published_at.is_not(None)))
        if recorded:
            report.problems.append(f"no checkpoint file at {report.path}, though the database "
                                   f"records {recorded} published checkpoints")
        else:
            report.notes.append(f"no published checkpoints at {report.path}: the chains are "
                                "checked within the database only")
        return report
    entries, report.problems = checkpoint_file.read(report.path)
    ordered, problems, report.notes = checkpoint_file.check_sequence(entries, trusted_keys(settings))
    report.problems += problems
    report.checkpoints = len(ordered)
    report.newest = ordered[-1] if ordered else None
    recorded = db.session.scalar(select(func.max(LedgerCheckpoint.id)).where(
        LedgerCheckpoint.published_at.is_not(None)))
    if recorded and not ordered:
        report.problems.append(f"{report.path} holds no valid checkpoint, though the database "
                               f"records checkpoints up to {recorded} as published")
    elif recorded and report.newest and recorded > report.newest.n:
        report.notes.append(f"the database records checkpoint {recorded} as published, the file "
                            f"ends at {report.newest.n}: is this the whole file?")
    elif not ordered and not report.problems:
        report.notes.append(f"{report.path} holds no checkpoint yet")
    for entry in ordered if every else ordered[-1:]:
        report.problems += against_database(entry)
    return report


def against_database(entry: Published) -> list[str]:
    """Problems between one published checkpoint and the database (empty = it holds)."""
    n = entry.n
    where = f"checkpoint {n}"
    problems: list[str] = []
    record = db.session.get(LedgerCheckpoint, n)
    if record is None:
        problems.append(f"{where} is published but the database has no record of it (deleted?)")
    elif record.statement != checkpoint_file.canonical(entry.statement).decode():
        problems.append(f"{where}: the database's copy differs from the published one")
    heads = leaves(n)
    signed_size = entry.statement.get("tree_size")
    if len(heads) != signed_size or merkle.root(tree_of(heads)) != entry.statement.get("root"):
        problems.append(f"{where} signed {signed_size} chain heads; the database's record of them "
                        f"({len(heads)}) does not reproduce its root (subscriptions or their "
                        "checkpoint records deleted or rewritten)")
    signed = _heads(n)
    rows = db.session.execute(
        select(signed.c.subscription_id, signed.c.seq, signed.c.chain_hash,
               _SUB.c.id.label("present"), _EVENT.c.chain_hash.label("found"))
        .outerjoin(_SUB, _SUB.c.id == signed.c.subscription_id)
        .outerjoin(_EVENT, and_(_EVENT.c.subscription_id == signed.c.subscription_id,
                                _EVENT.c.seq == signed.c.seq))
        .where(or_(_SUB.c.id.is_(None), _EVENT.c.chain_hash.is_(None),
                   _EVENT.c.chain_hash != signed.c.chain_hash))
        .order_by(signed.c.subscription_id)).all()
    for row in rows:
        sub = f"subscription {row.subscription_id}"
        if row.present is None:
            problems.append(f"{sub}, whose events #1..#{row.seq} {where} signed, is gone "
                            "(deleted with its events)")
        elif row.found is None:
            problems.append(f"{sub}: event #{row.seq}, signed by {where}, is gone")
        else:
            problems.append(f"{sub}: its history up to event #{row.seq} is not what {where} "
                            "signed (altered and re-hashed)")
    return problems


# --- what a proof shows ----------------------------------------------------------------


def covering(subscription_id: int) -> dict[str, Any] | None:
    """The newest published checkpoint that covers the subscription's events, with what
    an outsider needs to check it: the signed statement, signature, public key,
    time-stamp, and the Merkle path from the chain head to the signed root. None
    when no published checkpoint covers it yet."""
    record = db.session.scalars(
        select(LedgerCheckpoint).where(LedgerCheckpoint.published_at.is_not(None))
        .order_by(LedgerCheckpoint.id.desc()).limit(1)).first()
    if record is None:
        return None
    ids, tree = _cached_tree(str(db.engine.url), record.id, record.root)
    index = bisect_left(ids, subscription_id)
    if index >= len(ids) or ids[index] != subscription_id:
        return None
    seq, chain = db.session.execute(
        select(_LEAF.c.seq, _LEAF.c.chain_hash)
        .where(_LEAF.c.subscription_id == subscription_id, _LEAF.c.checkpoint_id <= record.id)
        .order_by(_LEAF.c.checkpoint_id.desc()).limit(1)).one()
    statement = _statement(record)
    return {
        "checkpoint": record.id,
        "at": statement["at"],
        "root": record.root,
        "tree_size": record.tree_size,
        "key_id": record.key_id,
        "public_key": _public_key_of(record),
        "statement": record.statement,
        "signature": record.signature,
        "tsa_token": record.tsa_token,
        "leaf": {"subscription_id": subscription_id, "seq": seq, "chain_hash": chain},
        "leaf_index": index,
        "merkle_path": [list(step) for step in merkle.packed_audit_path(tree, index)],
        "covers_events_through": seq,
        "published_in": current_settings().ledger_checkpoint_file.name,
    }


def anchor_problems(anchor: dict[str, Any], chain: dict[int, str]) -> list[str]:
    """What is wrong between a proof's checkpoint section (:func:`covering`) and the chain
    the proof shows (``chain``: each event's number and chain hash); empty when it holds.

    The per-chain check cannot see a history altered and re-hashed; this one, like
    ``optin ledger verify``, can: the head the checkpoint signed must still be the chain's
    event with that hash, and the database's copy of the checkpoint must carry a valid
    signature whose root the leaf's Merkle path leads to. Without it a proof showed the
    rewritten events as "intact" and "covered by checkpoint n".
    """
    where, leaf = f"checkpoint {anchor['checkpoint']}", anchor["leaf"]
    sub, seq = f"subscription {leaf['subscription_id']}", leaf["seq"]
    problems = list(_signed_copy_problems(anchor["statement"], anchor["signature"],
                                          anchor["tsa_token"]))
    data = merkle.leaf_data(int(leaf["subscription_id"]), int(seq), str(leaf["chain_hash"]))
    if not problems and merkle.root_from_path(data, anchor["merkle_path"]) != json.loads(
            anchor["statement"]).get("root"):
        problems.append(f"{sub}: the database's record of {where} does not lead to the root "
                        "it signed (checkpoint records rewritten)")
    found = chain.get(seq)
    if found is None:
        problems.append(f"{sub}: event #{seq}, signed by {where}, is gone")
    elif found != leaf["chain_hash"]:
        problems.append(f"{sub}: its history up to event #{seq} is not what {where} signed "
                        "(altered and re-hashed)")
    return problems


@lru_cache(maxsize=16)
def _signed_copy_problems(statement: str, signature: str, tsa_token: str | None) -> tuple[str, ...]:
    """The database's copy of a checkpoint checked as its published line would be (once per
    checkpoint and process: an audit export asks for every proof of a list)."""
    entry = Published(statement=json.loads(statement), signature=signature, public_key="",
                      tsa_token=tsa_token)
    return tuple(checkpoint_file.check_entry(entry, trusted_keys()))
