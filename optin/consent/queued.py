"""What the outbox's queued requests share: the signup intake (``intake``), confirmation
clicks (``confirmations``), withdrawals (``withdrawals``), fresh-link and resend requests
(``relink``, ``resends``).

Each holds a request's evidence (time, IP, user agent) only while it waits: once
processed, or dropped by an erasure, its payload becomes one of the markers below, and
retention blanks one that waited too long (:func:`blank_stale`). Its own module, so that
each of them can use the others' rules without importing in a circle.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, CursorResult, bindparam, type_coerce, update

from optin.extensions import db
from optin.models import OutboxItem

#: The payload of a queued request once processed (or dropped): nothing personal.
PROCESSED: dict[str, Any] = {"processed": True}
DROPPED_BY_ERASURE: dict[str, Any] = {"dropped": "erased"}

_ROWS = OutboxItem.__table__
_COLUMNS = ("kind", "serial_key", "subscription_id", "payload", "status", "attempts",
            "next_attempt_at", "created_at")
#: A queued request's one plain INSERT, parameters from ``OutboxItem.pending_values``, built
#: once (the ORM's unit of work would cost more than the database); inline: no RETURNING
#: of the new id, which nothing reads.
INSERT = _ROWS.insert().values({c: bindparam(c, type_=_ROWS.c[c].type) for c in _COLUMNS}) \
    .inline()


def blank_stale(kind: str, holds: str, as_of: datetime, pending_retention_days: int) -> int:
    """Blank the payload of queued-request rows of ``kind`` whose payload still ``holds``
    the request and which are older than an unconfirmed signup is kept, in the caller's
    transaction; how many."""
    cutoff = as_of - timedelta(days=pending_retention_days)
    result: CursorResult[Any] = db.session.execute(  # type: ignore[assignment]
        update(_ROWS).where(_ROWS.c.kind == kind, _ROWS.c.created_at < cutoff,
                            type_coerce(_ROWS.c.payload, JSON)[holds].as_string().is_not(None))
        .values(payload=PROCESSED, last_error=None),
        execution_options={"synchronize_session": False})
    return result.rowcount or 0
