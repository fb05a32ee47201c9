"""The worker's periodic jobs: once per interval between all workers; a failure is recorded
and tried again soon with backoff, not a day later (issue 13, finding 14)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from optin import OUTBOX_HANDLERS
from optin.delivery import worker
from optin.delivery.worker import JOB_LEASE, JOB_RETRY_SECONDS, PeriodicJob, Worker
from optin.extensions import db
from optin.models import ConsentEvent, JobState, MailIntent, OutboxItem

from ..conftest import FailingCommits, deliver, failing_commits, signup


class Flaky:
    """A job that fails its first ``failures`` runs."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError("batch failed")


def _with_job(app, run) -> PeriodicJob:
    job = PeriodicJob("flaky", lambda: timedelta(days=1), run)
    worker.init_app(app, handlers=OUTBOX_HANDLERS, jobs=[job])
    return job


def _state(app) -> dict:
    with app.app_context():
        return dict(db.session.get(JobState, "periodic:flaky").value)


def _shift(app, **moves: timedelta) -> None:
    """Move the job's recorded times into the past, as if that much time had gone by."""
    with app.app_context():
        state = db.session.get(JobState, "periodic:flaky")
        value = dict(state.value)
        for key, delta in moves.items():
            value[key] = (datetime.fromisoformat(value[key]) - delta).isoformat()
        state.value = value
        db.session.commit()


def test_a_failed_job_is_recorded_and_retried_with_backoff(app):
    flaky = Flaky(failures=2)
    _with_job(app, flaky)
    w = Worker(app)
    with app.app_context():
        w.run_periodic()
        state = _state(app)
        assert flaky.runs == 1 and state["failures"] == 1 and state["last_error"] == "RuntimeError"
        first_retry = datetime.fromisoformat(state["retry_at"])
        assert first_retry - datetime.fromisoformat(state["last_failed_at"]) == timedelta(
            seconds=JOB_RETRY_SECONDS)

        w.run_periodic()  # not yet: the retry time has not come
        assert flaky.runs == 1

        _shift(app, retry_at=timedelta(seconds=JOB_RETRY_SECONDS + 1))
        w.run_periodic()  # retried long before the day is over
        state = _state(app)
        assert flaky.runs == 2 and state["failures"] == 2
        assert datetime.fromisoformat(state["retry_at"]) - datetime.fromisoformat(
            state["last_failed_at"]) == timedelta(seconds=2 * JOB_RETRY_SECONDS)  # backoff

        _shift(app, retry_at=timedelta(seconds=2 * JOB_RETRY_SECONDS + 1))
        w.run_periodic()
        state = _state(app)
        assert flaky.runs == 3 and state["failures"] == 0 and state["retry_at"] is None
        assert state["last_succeeded_at"]

        w.run_periodic()  # succeeded: next turn after its interval only
        assert flaky.runs == 3


def test_a_run_whose_end_was_never_recorded_comes_back_after_the_lease(app):
    flaky = Flaky(failures=0)
    _with_job(app, flaky)
    w = Worker(app)
    with app.app_context():
        w.run_periodic()
        assert flaky.runs == 1
        # As if the worker had died mid-run: the turn is taken, its end never recorded.
        with app.app_context():
            state = db.session.get(JobState, "periodic:flaky")
            started = datetime.fromisoformat(state.value["last_started_at"])
            state.value = {"last_started_at": started.isoformat(),
                           "retry_at": (started + JOB_LEASE).isoformat()}
            db.session.commit()
        w.run_periodic()
        assert flaky.runs == 1  # within the lease: maybe still running elsewhere
        _shift(app, retry_at=JOB_LEASE + timedelta(seconds=1))
        w.run_periodic()
        assert flaky.runs == 2


# --- a database error in the middle of a batch (issue 13, finding 9) ----------------------


def test_a_database_error_after_a_send_keeps_the_mail_on_record_and_frees_the_batch(
        app, client, newsletter, mailbox, runner):
    """The three mails go in one group (groups.py): its commit fails after all three left,
    and each is still put on the ledger with its row done, so none is sent again."""
    for address in ("a@example.org", "b@example.org", "c@example.org"):
        assert signup(client, address).status_code == 202
    with failing_commits(FailingCommits(when=lambda: mailbox.messages)) as fault, \
            app.app_context():
        handled = Worker(app, threads=1).run_once()
    assert fault.failed and handled == 3 and len(mailbox.messages) == 3
    sent_ids = sorted(str(m["Message-ID"]) for m in mailbox.messages)

    with app.app_context():
        rows = db.session.scalars(select(OutboxItem).where(
            OutboxItem.kind != "signup_intake").order_by(OutboxItem.id)).all()
        # Nothing sits on a lease, and the mails that left are done with their rows.
        assert all(r.status == "done" and r.claimed_by is None for r in rows)
        kept = db.session.scalars(select(ConsentEvent).where(
            ConsentEvent.kind == "confirmation_sent")).all()
        assert sorted(e.details["message_id"] for e in kept) == sent_ids
        assert {e.subscription_id for e in kept} == {r.subscription_id for r in rows}
        assert all("after its delivery's transaction failed" in e.details["recorded"]
                   for e in kept)
        assert db.session.scalar(select(MailIntent.id)) is None

    deliver(app)
    assert len(mailbox.to("a@example.org")) == 1  # no duplicate without a crash
    assert len(mailbox.messages) == 3
    with app.app_context():
        assert all(r.status == "done" for r in db.session.scalars(select(OutboxItem)))
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0
