"""Accountability for operators: who looked at or changed what, and when.

Every operator call (HTTP or CLI) leaves an ``audit_entry`` row naming the
operator (the token's *name*, never the token) and, when it concerns an
address, the address's keyed hash, never the address. Calls about a
subscription additionally append an event to that subscription's ledger, so
the consent's own history shows every time someone accessed, printed or
erased it.

Two writers share the work, so that an HTTP call leaves exactly one row:

* the domain (:func:`record`), in the transaction of what it did, so that
  an erasure or a disclosure is never committed without its row, with the
  detail only the domain knows (how many subscriptions, which format);
* the operator API, once the answer is known (:func:`record_call`), for
  every call that presented a valid token, whatever its status: it adds
  method, route and status to the row the domain committed, or writes the
  row itself when the domain never got to commit one (refused input, an
  unknown list, a failed transaction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import g
from sqlalchemy import inspect

from optin.config import current_settings
from optin.consent import ledger
from optin.consent.addresses import InvalidAddress, address_hash, normalize_email
from optin.extensions import db
from optin.models import AuditEntry, EventKind, Subscription

_RECORDED = "optin_audit_recorded"


def record(actor: str, action: str, *, email_hash: str | None = None,
           details: dict[str, Any] | None = None) -> AuditEntry:
    """Add an audit row to the caller's transaction (the caller commits)."""
    entry = AuditEntry(actor=actor, action=action, email_hash=email_hash, details=details or {})
    db.session.add(entry)
    g.setdefault(_RECORDED, []).append(entry)  # for record_call, if this is an HTTP call
    return entry


def digest(raw: str) -> str:
    """The keyed hash of what was asked about: of the address, or, if it is not a valid
    one, of the text itself (kept no more in clear than an address)."""
    try:
        value = normalize_email(raw)
    except InvalidAddress:
        value = raw
    return address_hash(value, current_settings().hash_key)


@dataclass(frozen=True)
class Call:
    """An operator's HTTP call, answered."""

    actor: str
    action: str
    method: str
    route: str
    status: int
    email_hash: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def record_call(call: Call) -> None:
    """Record an answered call: complete the rows the domain committed during it with
    method, route and status, or, if it committed none, write the call's own row.

    Ends the request's transaction first, without committing it (what the view wanted
    kept it committed itself; the rest must not be kept by the audit), then commits the
    audit alone. Raises what the database raises; the caller decides about the answer.
    """
    db.session.rollback()
    rows = [entry for entry in g.pop(_RECORDED, []) if inspect(entry).persistent]
    if not rows:
        rows = [AuditEntry(actor=call.actor, action=call.action, email_hash=call.email_hash,
                           details={})]
        db.session.add(rows[0])
    for entry in rows:
        entry.method, entry.route, entry.status = call.method, call.route, call.status
        if call.details:
            entry.details = {**entry.details, **call.details}
    db.session.commit()


def note_on_ledger(subscriptions: list[Subscription], kind: EventKind, actor: str,
                   **details: Any) -> None:
    """Append ``kind`` (origin ``operator``) to each subscription's chain.

    The subscriptions must be locked by the caller (``with_for_update``), as
    for every ledger append.
    """
    for sub in subscriptions:
        ledger.append(sub, kind, origin="operator", details={"actor": actor, **details})
