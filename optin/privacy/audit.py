"""Accountability for operators: who looked at or changed what, and when.

Every operator call (HTTP or CLI) leaves an ``audit_entry`` row naming the
operator (the token's *name*, never the token) and, when it concerns an
address, the address's keyed hash, never the address. Calls about a
subscription additionally append an event to that subscription's ledger, so
the consent's own history shows every time someone accessed, printed or
erased it.
"""

from __future__ import annotations

from typing import Any

from optin.consent import ledger
from optin.extensions import db
from optin.models import AuditEntry, EventKind, Subscription


def record(actor: str, action: str, *, email_hash: str | None = None,
           details: dict[str, Any] | None = None) -> AuditEntry:
    """Add an audit row to the caller's transaction (the caller commits)."""
    entry = AuditEntry(actor=actor, action=action, email_hash=email_hash, details=details or {})
    db.session.add(entry)
    return entry


def note_on_ledger(subscriptions: list[Subscription], kind: EventKind, actor: str,
                   **details: Any) -> None:
    """Append ``kind`` (origin ``operator``) to each subscription's chain.

    The subscriptions must be locked by the caller (``with_for_update``), as
    for every ledger append.
    """
    for sub in subscriptions:
        ledger.append(sub, kind, origin="operator", details={"actor": actor, **details})
