"""When a record lapses: the retention dates, as pure functions of time.

The year end of §199 BGB is taken in Europe/Berlin, the controller's legal
time: a withdrawal at 23:30 UTC on 31 December is already in the new year in
Germany, and its limitation period starts a year later. Lapse instants are
returned in UTC. (Taking the year end in UTC instead would let such a proof
lapse a year early; Berlin is both the legally right and the cautious choice.)

The state machine stamps these dates on a subscription when it changes state;
the retention job (``privacy.retention``) minimizes what has passed them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

LEGAL_TZ = ZoneInfo("Europe/Berlin")


def proof_lapses_at(withdrawn_at: datetime, years: int) -> datetime:
    """End of the withdrawal year (Berlin) plus ``years``: proof may go after this.

    §195 BGB: three years; §199 BGB: counted from the end of the year in which
    the claim arose. The result is midnight starting 1 January of year
    ``withdrawal year + years + 1``, Berlin time.
    """
    if withdrawn_at.tzinfo is None:
        raise ValueError("withdrawn_at must be timezone-aware")
    local_year = withdrawn_at.astimezone(LEGAL_TZ).year
    return datetime(local_year + years + 1, 1, 1, tzinfo=LEGAL_TZ).astimezone(UTC)


def pending_lapses_at(signed_up_at: datetime, days: int) -> datetime:
    """An unconfirmed signup is kept ``days`` after the signup, then minimized.

    An exact duration (``days`` × 24 h), so daylight saving time cannot move it:
    the sum is taken in UTC, because Python adds a timedelta to a time in a
    zone like Europe/Berlin on the wall clock (an hour short across a DST change).
    """
    if signed_up_at.tzinfo is None:
        raise ValueError("signed_up_at must be timezone-aware")
    return signed_up_at.astimezone(UTC) + timedelta(days=days)
