"""Retention: the lapse dates, and `optin retention run` as an operator uses it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from sqlalchemy import inspect, select

from optin.consent import subscriptions
from optin.consent.addresses import address_hash
from optin.consent.lapse import pending_lapses_at, proof_lapses_at
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import ConsentEvent, JobState, RetentionRun, Subscription, Suppression, utcnow
from optin.privacy import retention

from ..conftest import PG_URL, deliver, links, retention_at, signup

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the date functions ---------------------------------------------------------------


@pytest.mark.parametrize(("withdrawn_at", "lapses_at"), [
    # An ordinary withdrawal: 31 Dec of the year + 3 years, at Berlin midnight (CET = UTC+1).
    (utc(2026, 6, 15, 10), utc(2029, 12, 31, 23)),
    (utc(2026, 1, 1, 0, 0), utc(2029, 12, 31, 23)),  # 01:00 in Berlin: still 2026
    (utc(2025, 12, 31, 22, 59, 59), utc(2028, 12, 31, 23)),  # 23:59:59 Berlin: still 2025
    # 23:00 and 23:30 UTC on 31 Dec are already the new year in Berlin: a year longer.
    (utc(2025, 12, 31, 23, 0), utc(2029, 12, 31, 23)),
    (utc(2025, 12, 31, 23, 30), utc(2029, 12, 31, 23)),
    # The same instant given in Berlin time gives the same answer.
    (datetime(2026, 1, 1, 0, 30, tzinfo=BERLIN), utc(2029, 12, 31, 23)),
    # Summer time (CEST) at the withdrawal changes nothing: the end is in winter.
    (datetime(2026, 7, 1, 1, 30, tzinfo=BERLIN), utc(2029, 12, 31, 23)),
    # Leap days, in the withdrawal year and in the end year.
    (utc(2028, 2, 29, 12), utc(2031, 12, 31, 23)),
    (utc(2024, 12, 31, 12), utc(2027, 12, 31, 23)),
])
def test_proof_lapses_at_end_of_berlin_year_plus_three(withdrawn_at: datetime,
                                                        lapses_at: datetime) -> None:
    result = proof_lapses_at(withdrawn_at, 3)
    assert result == lapses_at
    assert result.tzinfo == UTC
    in_berlin = result.astimezone(BERLIN)
    assert (in_berlin.month, in_berlin.day, in_berlin.hour, in_berlin.minute) == (1, 1, 0, 0)


def test_proof_lapses_at_counts_configured_years() -> None:
    assert proof_lapses_at(utc(2028, 2, 29), 1) == utc(2029, 12, 31, 23)
    assert proof_lapses_at(utc(2028, 2, 29), 10) == utc(2038, 12, 31, 23)


def test_pending_lapses_after_exact_days_across_leap_day_and_dst() -> None:
    assert pending_lapses_at(utc(2028, 2, 20, 10), 14) == utc(2028, 3, 5, 10)  # 29 Feb counted
    assert pending_lapses_at(utc(2027, 2, 20, 10), 14) == utc(2027, 3, 6, 10)
    # Berlin switches to summer time on 29 Mar 2026: still exactly 14 × 24 hours.
    start = datetime(2026, 3, 20, 12, tzinfo=BERLIN)
    result = pending_lapses_at(start, 14)
    assert result - start == timedelta(days=14)
    assert result.tzinfo == UTC
    assert result.astimezone(BERLIN).hour == 13  # 12:00 CET + 336 h = 13:00 CEST
    assert pending_lapses_at(utc(2026, 12, 25, 12), 14) == utc(2027, 1, 8, 12)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        proof_lapses_at(datetime(2026, 1, 1), 3)  # noqa: DTZ001
    with pytest.raises(ValueError, match="aware"):
        pending_lapses_at(datetime(2026, 1, 1), 14)  # noqa: DTZ001


# --- helpers ----------------------------------------------------------------------------


def snapshot(app) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables retention may touch, for before/after comparisons."""
    with app.app_context():
        out = {}
        for model in (Subscription, ConsentEvent, Suppression):
            rows = db.session.scalars(select(model).order_by(*inspect(model).primary_key)).all()
            out[model.__tablename__] = [
                {c.key: getattr(r, c.key) for c in inspect(model).column_attrs} for r in rows
            ]
        return out


def sub_of(app, address: str) -> dict[str, Any]:
    with app.app_context():
        digest = address_hash(address, app.extensions["optin.settings"].hash_key)
        sub = db.session.scalars(select(Subscription).where(Subscription.email_hash == digest)
                                 .order_by(Subscription.id)).all()[-1]
        return {
            "row": {c.key: getattr(sub, c.key) for c in inspect(Subscription).column_attrs},
            "events": [{c.key: getattr(e, c.key) for c in inspect(ConsentEvent).column_attrs}
                       for e in sub.events],
        }


def everything_stored(app) -> str:
    """All rows of all tables as one text, to search for traces of a person."""
    with app.app_context():
        parts = []
        for table in db.metadata.sorted_tables:
            parts.extend(repr(tuple(row)) for row in db.session.execute(table.select()))
        return "\n".join(parts)


def run(runner, *args: str):
    result = runner.invoke(args=["retention", "run", *args])
    assert result.exit_code == 0, result.output
    return result


def run_at(app, runner, moment: datetime | str):
    """A run as if at ``moment`` (the command refuses a future ``--now``: the records'
    dates move back instead, ``conftest.retention_at``)."""
    result = retention_at(app, runner, moment)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def population(app, client, confirmed, signed_up, mailbox):
    """Anna stays subscribed, Bob confirmed then unsubscribed, Carl never confirmed."""
    confirmed("anna@example.org", first_name="Anna")
    unsubscribe = confirmed("bob@example.org", first_name="Bob", last_name="Builder",
                            fields={"company": "Bob Ltd"},
                            source_url="https://www.example.com/landing?ref=bob")
    assert client.post(unsubscribe, environ_base={"REMOTE_ADDR": "198.51.100.66"}).status_code == 303
    carl = {"email": "carl@example.org", "list": "newsletter", "consent_text_version": 1,
            "first_name": "Carl"}
    assert client.post("/v1/subscriptions", json=carl, headers={"User-Agent": "CarlBrowser/1"},
                       environ_base={"REMOTE_ADDR": "192.0.2.99"}).status_code == 202
    deliver(app)
    with app.app_context():
        bob = db.session.scalar(select(Subscription).where(Subscription.email == "bob@example.org"))
        carl = db.session.scalar(select(Subscription).where(Subscription.email == "carl@example.org"))
        return {"bob_lapses": bob.retain_until, "bob_withdrawn": bob.withdrawn_at,
                "carl_lapses": carl.retain_until, "carl_signed_up": carl.created_at}


# --- the job ----------------------------------------------------------------------------


def test_withdrawal_and_signup_set_the_lapse_dates(app, population) -> None:
    # Counted from the recorded instants, never from the clock now: a withdrawal on 31
    # December checked on 1 January (Berlin) still lapses with its own year.
    withdrawn = population["bob_withdrawn"]
    assert population["bob_lapses"] == utc(withdrawn.astimezone(BERLIN).year + 3, 12, 31, 23)
    assert population["carl_lapses"] == population["carl_signed_up"] + timedelta(days=14)
    assert sub_of(app, "anna@example.org")["row"]["retain_until"] is None


def test_dry_run_counts_per_rule_and_changes_nothing(app, runner, population) -> None:
    before = snapshot(app)
    years_ahead = (population["bob_lapses"] + timedelta(days=1)).isoformat()
    result = run(runner, "--now", years_ahead, "--dry-run")
    assert "unconfirmed_signup: would minimize 1" in result.output
    assert "withdrawn_consent: would minimize 1" in result.output
    assert snapshot(app) == before
    with app.app_context():
        [record] = db.session.scalars(select(RetentionRun)).all()
        assert record.dry_run and record.finished_at is not None
        assert record.counts == {"unconfirmed_signup": 1, "withdrawn_consent": 1}


def test_runs_minimize_exactly_what_lapsed(app, runner, client, population) -> None:
    anna_before = sub_of(app, "anna@example.org")
    bob_before = sub_of(app, "bob@example.org")
    stored = everything_stored(app)
    for trace in ("bob@example.org", "198.51.100.66", "ref=bob",
                  "carl@example.org", "Carl", "192.0.2.99", "CarlBrowser"):
        assert trace in stored, trace  # so the search at the end can fail
    for trace in ("Builder", "Bob Ltd"):
        assert trace not in stored, trace  # Bob's name and fields went with his withdrawal

    # Just before the unconfirmed signup lapses: nothing to do.
    early = population["carl_lapses"] - timedelta(seconds=1)
    assert "unconfirmed_signup: minimized 0" in run_at(app, runner, early.isoformat()).output

    # 15 days on: only Carl's unconfirmed signup has lapsed; Bob's proof has years to go.
    result = run_at(app, runner, (utcnow() + timedelta(days=15)).isoformat())
    assert "unconfirmed_signup: minimized 1" in result.output
    assert "withdrawn_consent: minimized 0" in result.output
    carl = sub_of(app, "carl@example.org")
    assert carl["row"]["status"] == "minimized" and carl["row"]["email"] is None
    assert sub_of(app, "bob@example.org") == bob_before

    # The second after Bob's proof lapses (31 Dec + 3 years, Berlin midnight).
    just_before = population["bob_lapses"] - timedelta(seconds=1)
    assert "withdrawn_consent: minimized 0" in run_at(app, runner, just_before.isoformat()).output
    result = run_at(app, runner, population["bob_lapses"].isoformat())
    assert "withdrawn_consent: minimized 1" in result.output
    assert "unconfirmed_signup: minimized 0" in result.output

    # Decades later the confirmed subscriber is still exactly as she was.
    run_at(app, runner, "2099-12-31")
    assert sub_of(app, "anna@example.org") == anna_before

    with app.app_context():
        digest = address_hash("bob@example.org", app.extensions["optin.settings"].hash_key)
        bob = db.session.scalar(select(Subscription).where(Subscription.email_hash == digest))
        assert bob.status == "minimized" and bob.minimized_at is not None
        assert (bob.email, bob.first_name, bob.last_name, bob.fields, bob.source_url) == (
            None, None, None, None, None)
        assert bob.confirmed_at and bob.withdrawn_at  # dates stay
        kinds = [e.kind for e in bob.events]
        assert kinds[:2] == ["signup_requested", "confirmation_sent"] and kinds[-1] == "minimized"
        assert "confirmed" in kinds and "unsubscribed" in kinds
        for event in bob.events[:-1]:
            assert event.ip is None and event.user_agent is None and event.redacted_at
            assert set(event.details) <= set(retention.KEPT_DETAIL_KEYS)
        signup_event = bob.events[0]
        assert signup_event.details["consent_text_version"] == 1
        assert "fields_entered" not in signup_event.details  # names the request chose
        assert bob.events[-1].details == {"rule": "withdrawn_consent", "run": bob.events[-1].details["run"]}
        # The suppression (a keyed hash) survives minimization.
        assert subscriptions.is_suppressed(bob.list_id, digest)

    # No trace of Bob or Carl is left anywhere: address, names, fields, IPs, source URL.
    stored = everything_stored(app)
    for trace in ("bob@example.org", "Builder", "Bob Ltd", "198.51.100.66", "ref=bob",
                  "carl@example.org", "Carl", "192.0.2.99", "CarlBrowser"):
        assert trace not in stored, trace
    assert "anna@example.org" in stored

    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert "0 problems" in result.output


def test_second_run_is_a_no_op_and_every_run_is_recorded(app, runner, population) -> None:
    later = (population["bob_lapses"] + timedelta(days=1)).isoformat()
    told = run_at(app, runner, later).output.split(" as of ", 1)[1].split()[0]
    after_first = snapshot(app)
    result = run_at(app, runner, later)
    assert "unconfirmed_signup: minimized 0" in result.output
    assert "withdrawn_consent: minimized 0" in result.output
    assert snapshot(app) == after_first
    with app.app_context():
        first, second = db.session.scalars(select(RetentionRun).order_by(RetentionRun.id)).all()
        assert first.counts["unconfirmed_signup"] == 1 and first.counts["withdrawn_consent"] == 1
        assert first.counts["events_redacted"] > 0
        assert second.counts["unconfirmed_signup"] == second.counts["withdrawn_consent"] == 0
        assert first.as_of == datetime.fromisoformat(told)  # as the command was told
        assert first.host and first.finished_at and not first.dry_run
    listing = runner.invoke(args=["retention", "runs"])
    assert listing.exit_code == 0 and listing.output.count("real") == 2


def test_tampering_after_minimization_is_still_detected(app, runner, population) -> None:
    run_at(app, runner, (population["bob_lapses"] + timedelta(days=1)).isoformat())
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent).where(ConsentEvent.kind == "minimized"))
        event.details = {"rule": "withdrawn_consent", "run": 999}
        db.session.commit()
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1
    assert "(minimized) was modified" in result.output


def test_minimized_address_signs_up_again_with_a_fresh_double_opt_in(
        app, client, runner, mailbox, population) -> None:
    run_at(app, runner, (population["bob_lapses"] + timedelta(days=1)).isoformat())
    mailbox.clear()
    assert signup(client, "bob@example.org").status_code == 202
    deliver(app)
    [mail] = mailbox.to("bob@example.org")
    with app.app_context():
        digest = address_hash("bob@example.org", app.extensions["optin.settings"].hash_key)
        old, new = db.session.scalars(select(Subscription).where(Subscription.email_hash == digest)
                                      .order_by(Subscription.id)).all()
        assert (old.status, new.status) == ("minimized", "pending")
        assert new.email == "bob@example.org" and new.retain_until is not None
        # Until the new consent is confirmed the withdrawal's suppression stands.
        assert subscriptions.is_suppressed(new.list_id, digest)
    assert client.post(links(mail)["confirm"]).status_code == 303
    with app.app_context():
        new = db.session.get(Subscription, new.id)
        assert new.status == "confirmed" and new.retain_until is None
        assert not subscriptions.is_suppressed(new.list_id, digest)
        assert db.session.get(Subscription, old.id).status == "minimized"
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0


def test_unconfirmed_link_is_dead_after_minimization(app, client, runner, signed_up) -> None:
    confirm_path = signed_up("dora@example.org")
    run_at(app, runner, (utcnow() + timedelta(days=15)).isoformat())
    assert client.post(confirm_path).status_code == 404  # unknown now, not just expired
    assert sub_of(app, "dora@example.org")["row"]["status"] == "minimized"


def test_concurrent_runs_share_the_work(app, client, newsletter) -> None:
    """Two runs at once (as from cron on two hosts): every row minimized exactly once."""
    for i in range(40):
        assert signup(client, f"user{i}@example.org").status_code == 202
    as_of = utcnow() + timedelta(days=15)
    reports: list[retention.RunReport] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def one_run() -> None:
        try:
            with app.app_context():
                barrier.wait()
                reports.append(retention.run(as_of, batch=3))
                db.session.remove()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(r.counts["unconfirmed_signup"] for r in reports) == 40
    with app.app_context():
        minimized = db.session.scalars(select(ConsentEvent).where(ConsentEvent.kind == "minimized")).all()
        assert len(minimized) == len({e.subscription_id for e in minimized}) == 40
        from optin.consent import ledger
        assert ledger.verify(db.session).ok


def test_worker_runs_retention_once_a_day(app, population) -> None:
    worker = Worker(app)
    with app.app_context():
        worker.run_periodic()
        worker.run_periodic()  # within the day: not again
        runs = db.session.scalars(select(RetentionRun)).all()
        assert len(runs) == 1 and not runs[0].dry_run
        # Nothing had lapsed yet today.
        assert runs[0].counts["unconfirmed_signup"] == runs[0].counts["withdrawn_consent"] == 0


class FailingRedaction:
    """The database refuses the batch's redaction of event contents (``n`` times)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.left and statement.lstrip().upper().startswith("UPDATE CONSENT_EVENT"):
            self.left -= 1
            raise sa.exc.OperationalError(statement, parameters, ConnectionError("cut"))


def test_a_failed_run_is_recorded_as_failed_and_retried_soon(app, population) -> None:
    """A batch that fails leaves a finished, failed run on record, and the worker tries the
    job again within minutes instead of a day later (issue 13, finding 14)."""
    as_of = population["carl_lapses"] + timedelta(seconds=1)
    worker = Worker(app)
    fault = FailingRedaction(1)
    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", fault)
        try:
            with pytest.raises(sa.exc.OperationalError):
                retention.run(as_of)
            [failed] = db.session.scalars(select(RetentionRun)).all()
            assert failed.finished_at is not None
            assert failed.counts["failed"] == "OperationalError"
            assert failed.counts["batches"] == 0
            carl = db.session.scalar(select(Subscription).where(
                Subscription.email_hash == address_hash(
                    "carl@example.org", app.extensions["optin.settings"].hash_key)))
            assert carl.minimized_at is None  # the failed batch changed nothing

            fault.left = 1  # the worker's own daily run, when Carl has lapsed, fails the same way
            with time_machine.travel(as_of, tick=True):
                worker.run_periodic()
                state = db.session.get(JobState, "periodic:retention").value
                assert state["failures"] == 1 and state["last_error"] == "OperationalError"
                assert datetime.fromisoformat(state["retry_at"]) < utcnow() + timedelta(minutes=2)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", fault)
        runs = db.session.scalars(select(RetentionRun).order_by(RetentionRun.id)).all()
        assert [r.counts.get("failed") for r in runs] == ["OperationalError", "OperationalError"]


def test_now_must_be_a_date(runner, app) -> None:
    result = runner.invoke(args=["retention", "run", "--now", "next tuesday"])
    assert result.exit_code == 2
    assert "not an ISO date" in result.output


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"])
def test_a_time_outside_utcs_years_is_refused_not_a_traceback(runner, app, moment) -> None:
    """A valid ISO time whose zone puts it before year 1 or after 9999 in UTC ended the
    run in an OverflowError from the database layer (and left a run recorded as failed)."""
    result = runner.invoke(args=["retention", "run", "--now", moment, "--dry-run"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.exception
    assert "outside the years 1 to 9999" in result.output


@pytest.mark.skipif(not PG_URL, reason="row locks between transactions: PostgreSQL only")
def test_rows_locked_elsewhere_are_skipped_not_waited_for(app, client, newsletter) -> None:
    """FOR UPDATE SKIP LOCKED: a row another transaction holds (a concurrent run's batch,
    an erasure) is left alone, and the run neither waits for it nor fails."""
    for i in range(5):
        assert signup(client, f"user{i}@example.org").status_code == 202
    as_of = utcnow() + timedelta(days=15)
    with app.app_context():
        held = sorted(db.session.scalars(select(Subscription.id)))[2]
    engine = sa.create_engine(PG_URL)
    reports: list[retention.RunReport] = []

    def one_run() -> None:
        with app.app_context():
            reports.append(retention.run(as_of, batch=2))
            db.session.remove()

    try:
        with engine.connect() as other:
            other.execute(sa.text("SELECT id FROM subscription WHERE id = :id FOR UPDATE"),
                          {"id": held})
            thread = threading.Thread(target=one_run)
            thread.start()
            thread.join(timeout=30)
            assert not thread.is_alive(), "the run waited for a locked row"
            other.rollback()
    finally:
        engine.dispose()
    assert reports[0].counts["unconfirmed_signup"] == 4
    with app.app_context():
        assert db.session.get(Subscription, held).status == "pending"
        assert retention.run(as_of).counts["unconfirmed_signup"] == 1
        assert db.session.get(Subscription, held).status == "minimized"


def test_minimization_drops_the_reason_a_person_typed_when_unsubscribing(
        ac_newsletter, confirmed, ac_app, client, runner) -> None:
    """ActiveCampaign passes on what a contact typed as their reason for leaving
    (``unsubscribe[reason]``), kept as ``reason``, and "reason" was among the details
    minimization keeps: the typed text (here a name and an address) stayed for good."""
    confirmed("ada@example.org")
    typed = "Bitte keine Mails mehr an ada@example.org, Ada Lovelace"
    response = client.post("/webhooks/activecampaign?secret=webhook-secret-0123456789", data={
        "type": "unsubscribe", "list": "1", "contact[email]": "ada@example.org",
        "unsubscribe[reason]": typed})
    assert response.status_code == 200
    assert retention_at(ac_app, runner, "2099-01-01").exit_code == 0
    with ac_app.app_context():
        kept = [e.details for e in db.session.scalars(select(ConsentEvent))]
    assert not [d for d in kept if "ada@example.org" in str(d) or "Lovelace" in str(d)], kept
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0


@pytest.mark.parametrize("ahead", [timedelta(seconds=60), timedelta(days=366 * 5)])
def test_a_future_now_is_refused_unless_dry_run(app, runner, population, ahead) -> None:
    """``--now`` a day (or a minute) ahead without ``--dry-run`` minimized proof before its
    limitation period ran out, for good: an operator's slip (a year typed wrong) destroyed
    evidence. Refused with a usage error and nothing done; the dry run still counts."""
    before = snapshot(app)
    later = (population["bob_lapses"] + ahead).isoformat() if ahead.days else (
        utcnow() + ahead).isoformat()
    result = runner.invoke(args=["retention", "run", "--now", later])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "in the future" in result.output and "--dry-run" in result.output
    assert snapshot(app) == before
    with app.app_context():
        assert db.session.scalars(select(RetentionRun)).all() == []
    dry = run(runner, "--now", later, "--dry-run")
    assert "would minimize" in dry.output
    assert snapshot(app) == before


def test_minimization_drops_the_names_of_the_fields_a_visitor_entered(
        app, client, runner, confirmed) -> None:
    """The signup event's ``fields_entered`` lists the custom fields' names, which the
    visitor's request chooses (any text up to 64 characters: here an address and a phone
    number), and it was among the details minimization keeps: README promises only kinds,
    dates, text versions and hashes outlive it."""
    unsubscribe = confirmed("eve@example.org", fields={
        "eve.private@example.net": "ja", "Handy 0171 2345678": "ja"})
    assert client.post(unsubscribe).status_code == 303
    with app.app_context():
        [signup_event] = db.session.scalars(select(ConsentEvent).where(
            ConsentEvent.kind == "signup_requested")).all()
        assert "eve.private@example.net" in signup_event.details["fields_entered"]
    run_at(app, runner, "2099-01-01")
    stored = everything_stored(app)
    for trace in ("eve.private@example.net", "0171 2345678"):
        assert trace not in stored, trace
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0
