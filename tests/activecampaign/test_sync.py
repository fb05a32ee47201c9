"""Consent to ActiveCampaign through the outbox: HTTP, the worker and the CLI against a fake
ActiveCampaign served over HTTP (tests/fake_activecampaign.py)."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy import select, update

from optin import create_app
from optin.config import ConfigError
from optin.delivery.notifications import unsubscribe_url
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import ConsentEvent, MailingList, OutboxItem, Subscription, utcnow

from ..conftest import deliver, make_config, wait_for

ADA = "ada@example.org"


@pytest.fixture
def app_config(app_config):
    """Every app here maps the personal field ``company`` to ActiveCampaign field 3."""
    app_config["OPTIN_AC_FIELD_MAP"] = "company:3"
    return app_config


def test_ac_config_configures_the_app_wherever_it_is_listed(app, ac_config, fake_ac):
    """``app`` comes first here, yet it is built with ``ac_config``'s settings."""
    settings = app.extensions["optin.settings"]
    assert (settings.ac_dry_run, settings.ac_url) == (False, fake_ac.url)
    assert settings.ac_field_map == {"company": "3"}  # and with this module's app_config


def _sub(app, address=ADA) -> Subscription:
    with app.app_context():
        sub = db.session.scalar(select(Subscription).where(Subscription.email == address)
                                .order_by(Subscription.id.desc()))
        db.session.expunge(sub)
        return sub


def _events(app, address=ADA, kind=None) -> list[ConsentEvent]:
    with app.app_context():
        sub_id = db.session.scalar(select(Subscription.id).where(Subscription.email == address)
                                   .order_by(Subscription.id.desc()))
        query = select(ConsentEvent).where(ConsentEvent.subscription_id == sub_id)
        if kind:
            query = query.where(ConsentEvent.kind == kind)
        events = list(db.session.scalars(query.order_by(ConsentEvent.seq)))
        db.session.expunge_all()
        return events


def _rows(app, kind=None) -> list[OutboxItem]:
    with app.app_context():
        query = select(OutboxItem).order_by(OutboxItem.id)
        if kind:
            query = query.where(OutboxItem.kind == kind)
        rows = list(db.session.scalars(query))
        db.session.expunge_all()
        return rows


def _make_due(app) -> None:
    """Let time pass for the outbox: every waiting row is due now."""
    with app.app_context():
        db.session.execute(update(OutboxItem).where(OutboxItem.status == "pending")
                           .values(next_attempt_at=utcnow()))
        db.session.commit()


def _unsubscribe_path(app, address=ADA) -> str:
    with app.app_context():
        sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
        return unsubscribe_url(sub).removeprefix("http://newsletter.test")


def test_a_confirmation_puts_the_contact_on_the_list(ac_newsletter, confirmed, ac_app, fake_ac,
                                                     runner):
    confirmed(ADA, first_name="Ada", last_name="Lovelace",
              fields={"company": "ACME", "hobby": "chess"})

    assert fake_ac.contact_status(ADA, 1) == 1
    contact = fake_ac.contact(ADA)
    assert (contact["firstName"], contact["lastName"]) == ("Ada", "Lovelace")
    assert contact["fieldValues"] == {"3": "ACME"}  # only mapped fields leave the service
    assert all(r.api_token == fake_ac.api_key for r in fake_ac.requests)
    [synced] = _events(ac_app, kind="synced")
    assert synced.details == {"action": "subscribe", "ac_contact_id": contact["id"],
                              "ac_list_id": 1, "status": 1}
    assert _sub(ac_app).ac_contact_id == contact["id"]
    assert [r.status for r in _rows(ac_app, "ac_subscribe")] == ["done"]
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0


def test_an_unsubscribe_sets_status_2(ac_newsletter, confirmed, ac_app, client, fake_ac):
    path = confirmed(ADA)
    assert fake_ac.contact_status(ADA, 1) == 1

    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    deliver(ac_app)

    assert fake_ac.contact_status(ADA, 1) == 2
    last = fake_ac.requests_to("POST", "contactLists")[-1]
    assert last.json["contactList"]["status"] == 2
    assert _events(ac_app, kind="synced")[-1].details["action"] == "unsubscribe"
    assert fake_ac.contact_count == 1


def test_an_unsubscribe_racing_a_queued_subscribe_wins(ac_newsletter, signed_up, ac_app, client,
                                                       fake_ac):
    confirm_path = signed_up(ADA, first_name="Ada")
    assert client.post(confirm_path).status_code == 303  # queues ac_subscribe
    assert client.post(_unsubscribe_path(ac_app)).status_code == 303  # before the worker ran

    deliver(ac_app)

    assert fake_ac.contact_status(ADA, 1) == 2
    statuses = [r.json["contactList"]["status"] for r in fake_ac.requests_to("POST", "contactLists")]
    assert statuses == [2]  # never subscribed, not even for a moment
    # The unsubscribed record carries the address only: the name was deleted with the consent.
    assert fake_ac.requests_to("POST", "contact/sync")[0].json == {"contact": {"email": ADA}}


def test_a_withdrawal_during_the_subscribe_call_still_wins(ac_newsletter, signed_up, ac_app,
                                                           client, fake_ac):
    confirm_path = signed_up(ADA)
    assert client.post(confirm_path).status_code == 303
    unsubscribe = _unsubscribe_path(ac_app)
    fake_ac.delay = 0.5  # each ActiveCampaign answer takes a while
    worker = threading.Thread(target=deliver, args=(ac_app,))
    worker.start()
    wait_for(lambda: fake_ac.requests_to("POST", "contact/sync"), interval=0.01)

    # The subscribe is in flight; the unsubscribe does not wait for it (no row lock is
    # held across the calls, PostgreSQL included).
    assert client.post(unsubscribe).status_code == 303
    assert worker.is_alive()
    worker.join(timeout=30)
    fake_ac.delay = 0
    deliver(ac_app)

    assert fake_ac.contact_status(ADA, 1) == 2
    assert fake_ac.requests_to("POST", "contactLists")[-1].json["contactList"]["status"] == 2
    assert _sub(ac_app).status == "unsubscribed"
    events = [(e.kind, e.details.get("action")) for e in _events(ac_app)
              if e.kind in ("synced", "unsubscribed")]
    withdrawn_at = events.index(("unsubscribed", None))
    assert ("synced", "subscribe") not in events[withdrawn_at:]  # nothing subscribes after it
    # The subscribe found the withdrawal when it read again, and unsubscribed itself.
    assert events[:2] == [("unsubscribed", None), ("synced", "unsubscribe")]


@pytest.fixture
def breaker_config(app_config):
    app_config["OPTIN_BREAKER_FAILURES"] = "3"
    return app_config


def test_503s_pause_the_syncs_without_spending_attempts_and_a_probe_resumes_them(
        breaker_config, ac_newsletter, confirmed, ac_app, fake_ac):
    """ActiveCampaign answering 503 is its own failure: after OPTIN_BREAKER_FAILURES (3 here)
    its breaker opens, the syncs wait with their attempts untouched, one probe is sent per
    interval, and the probe that goes through lets every sync out at once."""
    from optin.delivery.breaker import PREFIX, BreakerState
    from optin.delivery.worker import Worker
    from optin.models import JobState

    def breaker() -> BreakerState:
        with ac_app.app_context():
            row = db.session.get(JobState, PREFIX + "activecampaign")
            return BreakerState.load("activecampaign", row.value if row else {})

    fake_ac.outage = True
    addresses = [f"reader{i}@example.org" for i in range(5)]
    for address in addresses:
        confirmed(address)  # the welcome mail goes out; the sync fails and waits
    assert breaker().is_open
    rows = _rows(ac_app, "ac_subscribe")
    assert {r.status for r in rows} == {"pending"} and {r.attempts for r in rows} == {0}
    calls = len(fake_ac.requests)
    assert calls == 3  # the three failures that opened it, nothing after

    worker = Worker(ac_app, threads=1)
    def interval_passes() -> None:
        with ac_app.app_context():
            row = db.session.get(JobState, PREFIX + "activecampaign")
            row.value = {**row.value, "probe_at": None}
            db.session.commit()
        _make_due(ac_app)

    for _ in range(3):  # three intervals of outage: one probe each, whoever looks
        interval_passes()
        with ac_app.app_context():
            worker.run_once()
            worker.run_once()
    assert len(fake_ac.requests) == calls + 3
    assert {r.attempts for r in _rows(ac_app, "ac_subscribe")} == {0}
    assert fake_ac.contact_count == 0

    fake_ac.outage = False
    interval_passes()
    deliver(ac_app)  # the probe goes through, and the rest follow in the same drain

    assert [fake_ac.contact_status(a, 1) for a in addresses] == [1] * 5
    assert {r.status for r in _rows(ac_app, "ac_subscribe")} == {"done"}
    assert breaker().clean


def test_a_422_for_one_contact_is_its_own_dead_letter(ac_newsletter, confirmed, ac_app,
                                                      fake_ac):
    """A row's own error keeps the row's rules: one dead letter, no breaker, the next
    contact synced."""
    fake_ac.fail_next(1, 422)
    confirmed("first@example.org")
    confirmed("second@example.org")
    rows = _rows(ac_app, "ac_subscribe")
    assert [r.status for r in rows] == ["dead", "done"]
    assert fake_ac.contact_status("second@example.org", 1) == 1


def test_429_retry_after_is_honoured(ac_newsletter, confirmed, ac_app, fake_ac):
    fake_ac.fail_next(1, 429, retry_after="7")
    before = utcnow()
    confirmed(ADA)

    [row] = _rows(ac_app, "ac_subscribe")
    assert row.status == "pending" and "429" in row.last_error
    wait = (row.next_attempt_at - before).total_seconds()
    assert 7 <= wait < 15
    assert fake_ac.contact_count == 0

    _make_due(ac_app)
    deliver(ac_app)
    assert fake_ac.contact_status(ADA, 1) == 1


def test_a_422_becomes_a_dead_letter_and_a_retry_after_the_fix_succeeds(
        ac_newsletter, confirmed, ac_app, fake_ac, runner):
    with ac_app.app_context():  # a list id ActiveCampaign does not have
        db.session.get(MailingList, ac_newsletter["id"]).ac_list_id = 99
        db.session.commit()
    confirmed(ADA)

    [row] = _rows(ac_app, "ac_subscribe")
    assert row.status == "dead" and row.attempts == 1
    dead = runner.invoke(args=["outbox", "list", "--dead"])
    assert "422" in dead.output and "The related list does not exist." in dead.output
    assert fake_ac.api_key not in dead.output

    fake_ac.add_list(99, "Created later")  # the fix
    retried = runner.invoke(args=["outbox", "retry", str(row.id)])
    assert retried.exit_code == 0, retried.output
    deliver(ac_app)

    assert fake_ac.contact_status(ADA, 99) == 1
    assert [r.status for r in _rows(ac_app, "ac_subscribe")] == ["done"]
    assert _events(ac_app, kind="synced")[-1].details["ac_list_id"] == 99


def test_delivering_the_same_row_again_creates_no_second_contact(ac_newsletter, confirmed,
                                                                 ac_app, fake_ac):
    confirmed(ADA)
    # A worker crashed after the calls, before its commit: the row is delivered again.
    with ac_app.app_context():
        db.session.execute(update(OutboxItem).where(OutboxItem.kind == "ac_subscribe")
                           .values(status="pending", finished_at=None, next_attempt_at=utcnow()))
        db.session.commit()
    deliver(ac_app)

    assert fake_ac.contact_count == 1
    assert fake_ac.contact_status(ADA, 1) == 1
    assert len(fake_ac.requests_to("POST", "contact/sync")) == 2


def test_a_rejected_api_key_holds_the_sync_and_never_shows_the_key(ac_newsletter, confirmed,
                                                                   ac_app, fake_ac, caplog):
    configured_key = fake_ac.api_key
    fake_ac.api_key = "rotated-key-0000000000000000"  # the account's key was changed
    caplog.set_level(logging.DEBUG)
    confirmed(ADA)

    [row] = _rows(ac_app, "ac_subscribe")
    assert row.status == "pending"  # held, not a dead letter: it goes through once fixed
    assert "403" in row.last_error and "OPTIN_AC_API_KEY" in row.last_error
    assert any(r.levelno == logging.ERROR and "API key" in r.getMessage() for r in caplog.records)
    assert configured_key not in caplog.text
    assert configured_key not in row.last_error

    fake_ac.api_key = configured_key  # the operator fixed it
    _make_due(ac_app)
    deliver(ac_app)
    assert fake_ac.contact_status(ADA, 1) == 1
    assert all(configured_key not in str(e.details) for e in _events(ac_app))


def test_a_list_without_an_activecampaign_id_is_skipped_with_a_warning(ac_app, newsletter,
                                                                       confirmed, fake_ac, caplog):
    confirmed(ADA)

    assert fake_ac.requests == []
    [skipped] = _events(ac_app, kind="sync_skipped")
    assert skipped.details == {"action": "subscribe",
                               "reason": "the list has no ActiveCampaign list id"}
    assert any(r.levelno == logging.WARNING and "no ActiveCampaign list id" in r.getMessage()
               for r in caplog.records)
    assert [r.status for r in _rows(ac_app, "ac_subscribe")] == ["done"]


def test_dry_run_logs_and_ledgers_every_call_as_skipped(app, newsletter, confirmed, client,
                                                        caplog):
    caplog.set_level(logging.INFO, logger="optin")
    path = confirmed(ADA)
    client.post(path)
    deliver(app)

    skipped = _events(app, kind="sync_skipped")
    assert [e.details["action"] for e in skipped] == ["subscribe", "unsubscribe"]
    assert {e.details["reason"] for e in skipped} == {"dry-run (OPTIN_AC_URL unset)"}
    assert "would subscribe" in caplog.text and "would unsubscribe" in caplog.text


def test_a_confirmation_reaches_the_list_within_seconds_with_the_worker_running(
        ac_newsletter, signed_up, ac_app, client, fake_ac):
    confirm_path = signed_up(ADA)
    worker = Worker(ac_app)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert client.post(confirm_path).status_code == 303
        wait_for(lambda: fake_ac.contact_status(ADA, 1) == 1)
        # (SQLite has no row locks: let the worker finish writing this subscription's ledger.)
        wait_for(lambda: all(r.status == "done" for r in _rows(ac_app)))
        assert client.post(_unsubscribe_path(ac_app)).status_code == 303
        wait_for(lambda: fake_ac.contact_status(ADA, 1) == 2)
    finally:
        worker.stop()
        thread.join(timeout=15)


@pytest.mark.parametrize(("name", "value"), [
    ("OPTIN_AC_FIELD_MAP", "company"),
    ("OPTIN_AC_FIELD_MAP", "company:x"),
    ("OPTIN_AC_FIELD_MAP", "company:3,company:4"),
    ("OPTIN_AC_RATE_LIMIT", "0"),
    ("OPTIN_AC_RATE_LIMIT", "fast"),
    ("OPTIN_AC_RECONCILE_MINUTES", "-1"),
    ("OPTIN_AC_TIMEOUT_SECONDS", "0"),
    ("OPTIN_AC_URL", "acct.api-us1.com"),
])
def test_activecampaign_settings_are_validated(tmp_path, name, value):
    config = make_config(tmp_path, **{"OPTIN_AC_URL": "https://acct.api-us1.com",
                                      "OPTIN_AC_API_KEY": "key-0123456789", name: value})
    with pytest.raises(ConfigError, match=name):
        create_app(config)


def test_settings_parse(tmp_path):
    app = create_app(make_config(tmp_path, OPTIN_AC_FIELD_MAP=" company:3 , role:7 ",
                                 OPTIN_AC_RATE_LIMIT="2.5", OPTIN_AC_RECONCILE_MINUTES="0"))
    settings = app.extensions["optin.settings"]
    assert settings.ac_field_map == {"company": "3", "role": "7"}
    assert settings.ac_rate_limit == 2.5 and settings.ac_reconcile_minutes == 0
    assert settings.ac_timeout_seconds == 10

