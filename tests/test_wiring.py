"""The app factory wires the worker explicitly: every outbox kind and every job is accounted for."""

from __future__ import annotations

from datetime import timedelta

from optin import OUTBOX_HANDLERS, PERIODIC_JOBS
from optin.delivery import outbox, worker
from optin.models import OutboxKind


def test_every_outbox_kind_has_exactly_one_handler():
    assert set(OUTBOX_HANDLERS) == set(OutboxKind)
    assert all(callable(fn) for fn in OUTBOX_HANDLERS.values())


def test_every_periodic_job_has_a_schedule(app):
    names = [job.name for job in PERIODIC_JOBS]
    assert len(names) == len(set(names)) and {"retention", "ac_reconcile"} <= set(names)
    with app.app_context():
        for job in PERIODIC_JOBS:
            interval = job.interval()
            assert isinstance(interval, timedelta) and interval > timedelta(0), job.name
            assert callable(job.run)


def test_the_app_hands_the_worker_its_table(app):
    assert app.extensions[outbox.HANDLERS_EXTENSION] == dict(OUTBOX_HANDLERS)
    assert app.extensions[worker.JOBS_EXTENSION] == PERIODIC_JOBS
