"""The worker loop: deliver the outbox, run periodic jobs, stop cleanly on SIGTERM.

Run as many workers as you like (``optin worker`` on several hosts): they
share the outbox through leases, and periodic jobs through a row in
``job_state``, so each job runs once per interval across all of them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask

from optin.config import current_settings
from optin.delivery import outbox
from optin.delivery.outbox import Handler
from optin.extensions import db
from optin.models import JobState, OutboxKind, utcnow
from optin.ops import logs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    """Work the workers run once per ``interval`` between them (``optin.PERIODIC_JOBS``)."""

    name: str
    interval: Callable[[], timedelta]  # read from settings when due
    run: Callable[[], object]


#: Where the app keeps its periodic jobs, passed in by the app factory.
JOBS_EXTENSION = "optin.periodic_jobs"


def init_app(app: Flask, *, handlers: Mapping[OutboxKind, Handler],
             jobs: Sequence[PeriodicJob]) -> None:
    """Give the app's workers their outbox handlers and periodic jobs (explicit, no registry)."""
    app.extensions[outbox.HANDLERS_EXTENSION] = dict(handlers)
    app.extensions[JOBS_EXTENSION] = tuple(jobs)


def _due(job: PeriodicJob) -> bool:
    """Take the job's turn if it is due; commit so other workers see it taken."""
    now = utcnow()
    key = f"periodic:{job.name}"
    state = db.session.get(JobState, key, with_for_update=True)
    if state is None:
        state = JobState(name=key, value={})
        db.session.add(state)
    last = state.value.get("last_started_at")
    if last and now - datetime.fromisoformat(last) < job.interval():
        db.session.rollback()
        return False
    state.value = {**state.value, "last_started_at": now.isoformat()}
    db.session.commit()
    return True


class Worker:
    """Delivers due outbox rows in batches until told to stop."""

    def __init__(self, app: Flask, *, batch: int = 20, worker_id: str | None = None) -> None:
        self.app = app
        self.batch = batch
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stop_event = threading.Event()

    def run_once(self) -> int:
        """Claim one batch and deliver it; return how many rows were handled."""
        settings = current_settings()
        horizon = timedelta(hours=settings.outbox_retry_horizon_hours)
        ids = outbox.claim(self.worker_id, self.batch)
        for i, item_id in enumerate(ids):
            if self.stop_event.is_set():
                outbox.release(self.worker_id, ids[i:])
                return i
            try:
                outbox.deliver(item_id, self.worker_id,
                               max_attempts=settings.outbox_max_attempts, horizon=horizon)
            except Exception:  # a database hiccup: the lease brings the row back
                with logs.context(outbox_id=item_id):
                    log.exception("delivering outbox row %s failed", item_id)
                db.session.rollback()
        return len(ids)

    def run_periodic(self) -> None:
        for job in self.app.extensions[JOBS_EXTENSION]:
            with logs.context(job=job.name):
                try:
                    if _due(job):
                        log.info("running periodic job %s", job.name)
                        job.run()
                except Exception:
                    log.exception("periodic job %s failed", job.name)
                    db.session.rollback()

    def drain(self) -> int:
        """Deliver until nothing is due (tests and the CLI's ``--once``)."""
        total = 0
        with self.app.app_context():
            while handled := self.run_once():
                total += handled
        return total

    def run(self) -> None:
        """Loop until :meth:`stop`; the row in hand is always finished first."""
        log.info("worker %s started", self.worker_id)
        with self.app.app_context():
            poll = current_settings().worker_poll_seconds
            while not self.stop_event.is_set():
                try:
                    handled = self.run_once()
                    self.run_periodic()
                except Exception:
                    log.exception("worker loop error; retrying after a pause")
                    db.session.rollback()
                    handled = 0
                finally:
                    db.session.remove()
                if not handled:
                    self.stop_event.wait(poll)
        log.info("worker %s stopped", self.worker_id)

    def stop(self, *_: object) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
