"""Dates as people read them, the one formatter for pages, mails and the proof of consent.

Babel's CLDR data writes each language's own long date (``1. Dezember 2026``,
``1 December 2026``) and names the zone (``MEZ``, ``CET``); the zone is
OPTIN_PROOF_TIMEZONE, the controller's legal time (the lapse dates are
reckoned in it too), unless a caller names another. Below every layer that
shows a date, so a page, a mail and a proof never disagree on one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time, get_timezone_name

from optin.config import current_settings

#: babel's locale for each language: British English writes "1 December 2026".
BABEL_LOCALES: dict[str, str] = {"de": "de_DE", "en": "en_GB"}


def _local(moment: datetime, zone: str | None) -> datetime:
    if moment.tzinfo is None:  # the database's UTC, without its zone
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo(zone or current_settings().proof_timezone))


def _babel(locale: str) -> str:
    return BABEL_LOCALES.get(locale, BABEL_LOCALES["en"])


def utc_offset(moment: datetime) -> str:
    """``UTC+1``, ``UTC−3:30``, ``UTC`` (with a real minus sign, as the proof prints it)."""
    delta = moment.utcoffset()
    minutes = int(delta.total_seconds() // 60) if delta else 0
    sign = "+" if minutes >= 0 else "−"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "") if minutes else "UTC"


def local_datetime(moment: datetime | None, locale: str, zone: str | None = None, *,
                   precise: bool = False) -> str:
    """A moment for a page or a mail: ``1. Dezember 2026, 08:41 Uhr``, or in English
    ``1 December 2026, 08:41 (CET)`` (a German reader reads German time; anyone else is
    told the zone), a no-break space before ``Uhr`` or the zone. ``precise`` is the
    proof's: seconds, and the zone with its offset in every language,
    ``1. Dezember 2026, 08:41:04 Uhr (MEZ, UTC+1)``. None gives ``""``."""
    if moment is None:
        return ""
    local = _local(moment, zone)
    babel = _babel(locale)
    clock = format_time(local, "HH:mm:ss" if precise else "HH:mm", locale=babel)
    name = get_timezone_name(local, "short", locale=babel)
    text = f"{format_date(local, 'long', locale=babel)}, {clock}"
    if precise:
        return f"{text}{' Uhr' if locale == 'de' else ''} ({name}, {utc_offset(local)})"
    # A no-break space: "08:41" and "Uhr" (or the zone) never part at a line's end.
    return f"{text}\u00a0Uhr" if locale == "de" else f"{text}\u00a0({name})"


def local_date(moment: datetime | None, locale: str, zone: str | None = None) -> str:
    """The day alone, for a sentence: ``15. Dezember 2026``, ``15 December 2026``."""
    if moment is None:
        return ""
    return format_date(_local(moment, zone), "long", locale=_babel(locale))
