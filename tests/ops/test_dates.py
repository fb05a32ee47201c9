"""Dates as people read them: one formatter (babel) for pages, mails and the proof."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from optin.ops.dates import local_date, local_datetime, utc_offset
from optin.privacy import document

BERLIN = "Europe/Berlin"
WINTER = datetime(2026, 12, 1, 7, 41, 4, tzinfo=UTC)
SUMMER = datetime(2026, 7, 1, 7, 41, 4, tzinfo=UTC)


def test_pages_and_mails_write_the_readers_date_in_the_controllers_time():
    assert local_datetime(WINTER, "de", BERLIN) == "1. Dezember 2026, 08:41\u00a0Uhr"
    assert local_datetime(SUMMER, "de", BERLIN) == "1. Juli 2026, 09:41\u00a0Uhr"
    # Anyone but a German reader is told the zone: 08:41 is not London's 08:41.
    assert local_datetime(WINTER, "en", BERLIN) == "1 December 2026, 08:41\u00a0(CET)"
    assert local_datetime(SUMMER, "en", BERLIN) == "1 July 2026, 09:41\u00a0(CEST)"
    assert local_date(WINTER, "de", BERLIN) == "1. Dezember 2026"
    assert local_date(WINTER, "en", BERLIN) == "1 December 2026"
    assert local_datetime(None, "de") == "" and local_date(None, "en") == ""
    # A naive value is the database's UTC.
    assert local_datetime(WINTER.replace(tzinfo=None), "de", BERLIN) == "1. Dezember 2026, 08:41\u00a0Uhr"


def test_the_proof_writes_its_dates_with_the_same_formatter():
    assert local_datetime(WINTER, "de", BERLIN, precise=True) == \
        "1. Dezember 2026, 08:41:04 Uhr (MEZ, UTC+1)"
    assert f">{local_datetime(SUMMER, 'en', BERLIN, precise=True)}</time>" in \
        str(document.when(SUMMER, "en", BERLIN))
    assert document.day(WINTER, "de", BERLIN) == local_date(WINTER, "de", BERLIN)


def test_offsets_and_other_zones():
    kolkata = local_datetime(WINTER, "en", "Asia/Kolkata", precise=True)
    assert kolkata.startswith("1 December 2026, 13:11:04 (") and kolkata.endswith("UTC+5:30)")
    assert utc_offset(WINTER) == "UTC"


@pytest.fixture
def zone_config(app_config):
    app_config["OPTIN_PROOF_TIMEZONE"] = "America/New_York"


def test_the_zone_defaults_to_the_configured_one(zone_config, app):
    with app.app_context():
        assert local_datetime(WINTER, "de") == "1. Dezember 2026, 02:41\u00a0Uhr"
