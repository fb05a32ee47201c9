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
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import select

from optin.config import Settings, current_settings
from optin.delivery import groups, intake_groups, intents, outbox
from optin.delivery.breaker import Breakers
from optin.delivery.heartbeat import Heartbeat, Held
from optin.delivery.notifier import Notifier
from optin.delivery.outbox import Handler
from optin.extensions import db
from optin.models import JobState, OutboxItem, OutboxKind, utcnow
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


#: Where the app keeps which destination each outbox kind goes to (its circuit breaker).
DESTINATIONS_EXTENSION = "optin.outbox_destinations"


def init_app(app: Flask, *, handlers: Mapping[OutboxKind, Handler],
             jobs: Sequence[PeriodicJob],
             destinations: Mapping[OutboxKind, str] | None = None,
             undying: Collection[OutboxKind] | None = None) -> None:
    """Give the app's workers their outbox handlers, periodic jobs, the destination of
    each kind and the kinds never given up (explicit, no registry)."""
    app.extensions[outbox.HANDLERS_EXTENSION] = dict(handlers)
    if undying is not None or outbox.UNDYING_EXTENSION not in app.extensions:
        app.extensions[outbox.UNDYING_EXTENSION] = frozenset(str(k) for k in undying or ())
    app.extensions[JOBS_EXTENSION] = tuple(jobs)
    if destinations is not None or DESTINATIONS_EXTENSION not in app.extensions:
        app.extensions[DESTINATIONS_EXTENSION] = {str(k): v for k, v in
                                                  (destinations or {}).items()}


#: Rows of a paced destination (not the relay: ActiveCampaign, 4 calls a second shared by
#: every worker, two calls a sync) a claim takes, in one lane at a time: about a second of
#: its pace. It drains at its rate limit all the same; no mail waits long behind it.
PACED_ROWS = 4
#: How often a worker with delivery lanes looks for due periodic jobs (at least its poll).
PERIODIC_SECONDS = 1.0
#: After a database error: tries to hand the batch back, and the failed row's pause.
RELEASE_ATTEMPTS = 4
FAILED_ROW_PAUSE_SECONDS = 10.0
#: A failed periodic job is tried again after this, doubling per failure up to its interval.
JOB_RETRY_SECONDS = 60.0
#: A started job that never reports back (its worker died, the database went away before
#: the end could be recorded) is started again after this; longer than any run takes.
JOB_LEASE = timedelta(minutes=15)


def _job_key(job: PeriodicJob) -> str:
    return f"periodic:{job.name}"


def _due(job: PeriodicJob, now: datetime) -> bool:
    """Take the job's turn if it is due; commit so other workers see it taken.

    Due once per interval after its last start, or sooner when its last run failed
    and the retry time has come (see :func:`_finished`). Taking the turn sets a retry
    time a lease ahead, so a run whose end is never recorded is not lost for a day.
    """
    state = db.session.get(JobState, _job_key(job), with_for_update=True)
    if state is None:
        state = JobState(name=_job_key(job), value={})
        db.session.add(state)
    value = dict(state.value)
    retry_at, last = value.get("retry_at"), value.get("last_started_at")
    due = (not last or now - datetime.fromisoformat(last) >= job.interval()
           or (retry_at is not None and now >= datetime.fromisoformat(retry_at)))
    if not due:
        db.session.rollback()
        return False
    state.value = {**value, "last_started_at": now.isoformat(),
                   "retry_at": (now + JOB_LEASE).isoformat()}
    db.session.commit()
    return True


def _finished(job: PeriodicJob, now: datetime, error: BaseException | None) -> None:
    """Record how the run ended: a failure is kept (with its type) and retried with backoff."""
    state = db.session.get(JobState, _job_key(job), with_for_update=True)
    if state is None:  # removed meanwhile: nothing to keep
        db.session.rollback()
        return
    value = dict(state.value)
    if error is None:
        value.update(last_succeeded_at=now.isoformat(), failures=0, last_error=None,
                     retry_at=None)
    else:
        failures = int(value.get("failures") or 0) + 1
        delay = min(JOB_RETRY_SECONDS * 2 ** (failures - 1), job.interval().total_seconds())
        value.update(failures=failures, last_failed_at=now.isoformat(),
                     last_error=type(error).__name__,
                     retry_at=(now + timedelta(seconds=delay)).isoformat())
    state.value = value
    db.session.commit()


#: Rows one delivery thread claims at a time: the signup intake and mail groups amortize
#: their statements over them (5 rows cost 5.1 statements a signup, 16 cost 1.7), and on a
#: 50 ms relay they are 0.8 s of sending, so a thread claims again about once a second.
LANE_ROWS = 16


class Worker:
    """Delivers due outbox rows until told to stop.

    Rows are claimed under a short lease that a heartbeat thread keeps renewing
    (``heartbeat.py``). With several ``threads`` (PostgreSQL), each delivery thread is a
    lane of its own: it claims :data:`LANE_ROWS` rows, delivers them on its own SMTP
    connection, and claims again as soon as it is done, or waits for the notifier when
    nothing is due (River's executors, Oban's and graphile-worker's per-queue fetch when
    capacity frees). No thread ever waits for another's rows, so a slow share (a stalling
    recipient, a slow relay) holds up only its own lane. One thread (SQLite, or
    ``--once``) claims a batch and delivers it in the worker's own thread.
    """

    def __init__(self, app: Flask, *, batch: int | None = None, worker_id: str | None = None,
                 threads: int | None = None) -> None:
        self.app = app
        settings: Settings = app.extensions["optin.settings"]
        if threads is None:
            threads = 1 if settings.database_url.startswith("sqlite") else settings.worker_threads
        self.threads = max(1, threads)
        # ``run_once``'s batch: LANE_ROWS a thread, as the lanes claim.
        self.batch = batch or max(20, LANE_ROWS * self.threads)
        #: rows a lane claims at a time (``--batch`` sets it; ``run_once`` takes ``batch``)
        self.lane_rows = batch or LANE_ROWS
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stop_event = threading.Event()
        self.lease = timedelta(seconds=settings.worker_lease_seconds)
        self.held = Held()
        self.heartbeat = Heartbeat(app, self.worker_id, self.held, lease=self.lease,
                                   every=settings.worker_heartbeat_seconds)
        self._pool: ThreadPoolExecutor | None = None
        self.breakers: Breakers | None = None
        self.notifier: Notifier | None = None
        self._paces = threading.local()
        self._local = threading.local()
        #: held by the one lane whose claims take the paced destinations' rows (below)
        self._paced_lane = threading.Lock()
        #: held by the one idle lane that claims for all of them (``lane_once``)
        self._scout = threading.Lock()
        self._lanes: list[threading.Thread] = []

    @property
    def _unsettled(self) -> set[int]:
        """This thread's batch's rows a crashed delivery may have sent (``intents``)."""
        return getattr(self._local, "unsettled", set())

    def _breakers(self) -> Breakers:
        """The circuit breakers, made in the app context on first use."""
        if self.breakers is None:
            settings = current_settings()
            self.breakers = Breakers(
                db.engine, self.app.extensions.get(DESTINATIONS_EXTENSION, {}),
                threshold=settings.breaker_failures,
                probe_interval=timedelta(seconds=settings.breaker_probe_seconds))
        return self.breakers

    def _claim(self, limit: int, *, paced: bool = True) -> list[int]:
        """Claim up to ``limit`` rows, passing by the rows of paused destinations, and with
        ``paced`` a few of the paced destinations' rows beside them; take the probe turn
        of each paused destination that is due one, and with it one of its rows."""
        breakers = self._breakers()
        breakers.refresh()
        paused = breakers.open_destinations()
        skip = [kind for destination in paused for kind in breakers.kinds_of(destination)]
        # A paced destination's rows are claimed apart, a few at a time: a backlog of them
        # (a backfill, the syncs an outage held) is due before the mails queued after it;
        # claimed with the rest, a confirmation mail waited behind minutes of
        # ActiveCampaign's few calls a second.
        kinds = sorted(kind for kind, destination in
                       self.app.extensions.get(DESTINATIONS_EXTENSION, {}).items()
                       if destination != groups.MAIL_DESTINATION and kind not in skip)
        ids = outbox.claim(self.worker_id, limit, lease=self.lease, skip_kinds=skip + kinds)
        if kinds and paced:
            ids += outbox.claim(self.worker_id, PACED_ROWS, lease=self.lease, only_kinds=kinds)
        for destination in paused:
            if breakers.take_probe(destination):
                ids += outbox.claim(self.worker_id, 1, lease=self.lease,
                                    only_kinds=breakers.kinds_of(destination))
        return ids

    def run_once(self) -> int:
        """Claim one batch and deliver it, over the delivery threads, waiting for all of
        them (``--once``, tests); return how many rows were handled."""
        ids = self._claim(self.batch)
        if not ids:
            return 0
        return self._handle(ids, threaded=True)

    def _handle(self, ids: list[int], *, threaded: bool = False) -> int:
        """Deliver claimed rows, held (their leases renewed) until each is finished."""
        self.held.add(ids)
        unsettled = self._local.unsettled = intents.left_over(ids)  # a crash may have sent
        try:
            if not threaded or self.threads == 1 or len(ids) == 1:
                return self._deliver_all(ids)
            return self._deliver_in_threads(ids, unsettled)
        finally:
            self.held.discard(ids)
            self._local.unsettled = set()

    def lane_once(self, *, idle: bool = False) -> int | None:
        """One step of a delivery thread's loop: claim ``lane_rows`` rows and deliver
        them in this thread; how many were handled (0: nothing was due).

        An ``idle`` lane (its last claim found nothing) claims only as the worker's one
        scout, else it returns None at once: a NOTIFY wakes every idle lane, and four lanes
        claiming at once split a trickle of signups into claims (and groups) of one row.
        A claim that comes back full wakes the idle lanes again, so they join one by one
        while there is more. The paced destinations' rows (ActiveCampaign's few calls a
        second) go to one lane at a time, :data:`PACED_ROWS` a claim, as they went a
        batch at a time: a backlog of them keeps at most one lane of the worker's, and no
        confirmation mail waits behind more than a second of them."""
        if idle and not self._scout.acquire(blocking=False):
            return None
        paced = self._paced_lane.acquire(blocking=False)
        try:
            try:
                ids = self._claim(self.lane_rows, paced=paced)
            finally:
                if idle:
                    self._scout.release()
            if len(ids) >= self.lane_rows and self.notifier is not None:
                self.notifier.wake()  # there may be more: an idle lane looks
            return self._handle(ids) if ids else 0
        finally:
            if paced:
                self._paced_lane.release()

    def _deliver_all(self, ids: list[int]) -> int:
        """Deliver ``ids`` in this thread (the app context is the caller's): the mails in
        group commits (``groups.py``), every other row in its own transaction, in order."""
        kinds = dict(db.session.execute(
            select(OutboxItem.id, OutboxItem.kind).where(OutboxItem.id.in_(ids))).all())
        destinations = self.app.extensions.get(DESTINATIONS_EXTENSION, {})
        mails = [i for i in ids if destinations.get(kinds.get(i)) == groups.MAIL_DESTINATION]
        intakes = ([i for i in ids if kinds.get(i) == intake_groups.KIND]
                   if intake_groups.grouped(self.app.extensions[outbox.HANDLERS_EXTENSION])
                   else [])
        others = [i for i in ids if i not in set(mails) | set(intakes)]
        handled = self._deliver_mails(mails, kinds)
        if handled < len(mails):  # stopped, or the database went away: the rest is released
            outbox.release(self.worker_id, intakes + others)
            return handled
        done = self._deliver_intakes(intakes)
        if done < len(intakes):
            outbox.release(self.worker_id, others)
            return handled + done
        return handled + done + self._deliver_rows(others)

    def _deliver_intakes(self, ids: list[int]) -> int:
        """The signup intake rows in groups (``intake_groups.py``), each group's
        confirmation mails sent by this thread right after its commit; how many intake rows
        were handled (fewer than ``ids``: stopped, or the database went away)."""
        settings = current_settings()
        horizon = timedelta(hours=settings.outbox_retry_horizon_hours)
        pending = list(ids)
        handled = 0
        while pending:
            if self.stop_event.is_set():
                outbox.release(self.worker_id, pending)
                return handled
            chunk, pending = pending[:intake_groups.GROUP_ROWS], pending[intake_groups.GROUP_ROWS:]
            try:
                outcome = intake_groups.deliver_intake_group(
                    chunk, self.worker_id, max_attempts=settings.outbox_max_attempts,
                    horizon=horizon, lease=self.lease)
            except Exception:  # the database went away: hand the batch back, don't sit on it
                log.exception("processing a group of %s intake rows failed", len(chunk))
                db.session.rollback()
                self._give_back(chunk, pending)
                self.held.discard(chunk + pending)
                return handled + len(chunk)
            self.held.discard([i for i in chunk if i not in set(outcome.again)])
            handled += outcome.handled
            pending = outcome.again + pending
            if outcome.mails:  # queued and leased to this worker: sent now, in mail groups
                self.held.add(outcome.mails)
                try:
                    self._deliver_mails(outcome.mails, dict.fromkeys(
                        outcome.mails, str(OutboxKind.CONFIRM_MAIL)))
                finally:
                    self.held.discard(outcome.mails)
        return handled

    def _deliver_mails(self, ids: list[int], kinds: dict[int, str]) -> int:
        """The mail rows in groups, each as large as this thread's relay sends in a group's
        window; a row whose destination is paused goes back untouched."""
        if not ids:
            return 0
        settings = current_settings()
        horizon = timedelta(hours=settings.outbox_retry_horizon_hours)
        gate = self._breakers()
        for item_id in ids:
            if item_id in self._unsettled:  # mails a crashed delivery may have sent
                intents.settle(item_id)
        paused = [i for i in ids if not gate.allows(kinds[i])]
        outbox.release(self.worker_id, paused)
        self.held.discard(paused)
        pending = [i for i in ids if i not in set(paused)]
        handled = len(paused)
        pace = self._pace()
        while pending:
            if self.stop_event.is_set():
                outbox.release(self.worker_id, pending)
                return handled
            chunk, pending = pending[:pace.rows()], pending[pace.rows():]
            try:
                outcome = groups.deliver_group(
                    chunk, self.worker_id, max_attempts=settings.outbox_max_attempts,
                    horizon=horizon, pace=pace, destination=groups.MAIL_DESTINATION)
            except Exception:  # the database went away: hand the batch back, don't sit on it
                log.exception("delivering a group of %s outbox rows failed", len(chunk))
                db.session.rollback()
                self._give_back(chunk, pending)
                self.held.discard(chunk + pending)
                return handled + len(chunk)
            self.held.discard([i for i in chunk if i not in set(outcome.again)])
            self._report(gate, outcome)
            handled += outcome.handled
            pending = outcome.again + pending
            if outcome.down is not None:  # the relay failed: its breaker decides for the rest
                paused = [i for i in pending if not gate.allows(kinds[i])]
                outbox.release(self.worker_id, paused)
                self.held.discard(paused)
                handled += len(paused)
                pending = [i for i in pending if i not in set(paused)]
        return handled

    def _pace(self) -> groups.Pace:
        """This thread's pace of sends (each thread has its own relay connection)."""
        pace = getattr(self._paces, "pace", None)
        if pace is None:
            pace = self._paces.pace = groups.Pace()
        return pace

    @staticmethod
    def _report(gate: Breakers, outcome: groups.Outcome) -> None:
        """Tell the breaker what the group met; its bookkeeping never fails a delivery."""
        try:
            if outcome.reached:
                gate.succeeded(groups.MAIL_DESTINATION)
            if outcome.down is not None:
                gate.failed(outcome.down.destination, str(outcome.down))
        except Exception:
            log.warning("could not record a destination's state", exc_info=True)

    def _deliver_rows(self, ids: list[int]) -> int:
        """Deliver ``ids`` one by one, each in its own transaction."""
        settings = current_settings()
        horizon = timedelta(hours=settings.outbox_retry_horizon_hours)
        for i, item_id in enumerate(ids):
            if self.stop_event.is_set():
                outbox.release(self.worker_id, ids[i:])
                return i
            try:
                outbox.deliver(item_id, self.worker_id, max_attempts=settings.outbox_max_attempts,
                               horizon=horizon, gate=self._breakers(),
                               settle=item_id in self._unsettled)
            except Exception:  # the database went away: hand the batch back, don't sit on it
                with logs.context(outbox_id=item_id):
                    log.exception("delivering outbox row %s failed", item_id)
                db.session.rollback()
                self._give_back([item_id], ids[i + 1:])
                return i + 1
            finally:
                self.held.discard([item_id])
        return len(ids)

    def _give_back(self, failed: list[int], unstarted: list[int]) -> None:
        """After a database error, release the unstarted rows at once (as SIGTERM does) and
        the failed ones after a pause, so no row waits out the lease; a short blip is bridged
        by a few tries, a long outage leaves it to the leases."""
        for attempt in range(1, RELEASE_ATTEMPTS + 1):
            try:
                outbox.release(self.worker_id, unstarted)
                outbox.release(self.worker_id, failed,
                               not_before=utcnow() + timedelta(seconds=FAILED_ROW_PAUSE_SECONDS))
                return
            except Exception:
                db.session.rollback()
                if attempt < RELEASE_ATTEMPTS and not self.stop_event.wait(0.1 * 2 ** attempt):
                    continue
                log.warning("could not release %s claimed rows; their leases bring them back",
                            len(unstarted) + len(failed))
                return

    def _deliver_in_threads(self, ids: list[int], unsettled: set[int]) -> int:
        """Split the batch over the delivery threads (row i to thread i mod n, keeping the
        claim's order within each); wait for all of them (``run_once`` only: the worker's
        loop runs lanes that never wait for each other)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="optin-deliver")
        shares = [ids[i::self.threads] for i in range(self.threads)]
        futures = [self._pool.submit(self._deliver_share, share, unsettled & set(share))
                   for share in shares if share]
        return sum(f.result() for f in futures)

    def _deliver_share(self, ids: list[int], unsettled: set[int]) -> int:
        with self.app.app_context():
            self._local.unsettled = unsettled
            try:
                return self._deliver_all(ids)
            finally:
                self._local.unsettled = set()
                db.session.remove()

    def _lane(self, poll: float) -> None:
        """A delivery thread: claim, deliver, claim again at once; when nothing is due,
        wait for the notifier (a NOTIFY, a breaker closing, :meth:`stop`) or the poll."""
        notifier = self.notifier
        assert notifier is not None
        with self.app.app_context():
            idle = True
            while not self.stop_event.is_set():
                seen = notifier.generation()  # a wake-up during the claim is not lost
                try:
                    handled = self.lane_once(idle=idle)
                except Exception:
                    log.exception("delivery thread error; retrying after a pause")
                    db.session.rollback()
                    handled = 0
                finally:
                    db.session.remove()
                if handled is not None:  # None: another idle lane looked; wait for its word
                    idle = not handled
                if not handled and not self.stop_event.is_set():
                    notifier.wait(poll, since=seen)

    def run_periodic(self) -> None:
        """Run the jobs that are due; a failure is recorded and retried soon, not in a day."""
        for job in self.app.extensions[JOBS_EXTENSION]:
            with logs.context(job=job.name):
                try:
                    if not _due(job, utcnow()):
                        continue
                    log.info("running periodic job %s", job.name)
                    job.run()
                except Exception as exc:
                    log.exception("periodic job %s failed", job.name)
                    db.session.rollback()
                    self._record_end(job, exc)
                else:
                    self._record_end(job, None)

    def _record_end(self, job: PeriodicJob, error: BaseException | None) -> None:
        try:
            _finished(job, utcnow(), error)
        except Exception:  # the database is down: the turn's lease brings the job back
            log.exception("could not record the end of periodic job %s", job.name)
            db.session.rollback()

    def drain(self) -> int:
        """Deliver until nothing is due (tests and the CLI's ``--once``)."""
        total = 0
        with self.app.app_context():
            while handled := self.run_once():
                total += handled
        self.close()
        return total

    def close(self) -> None:
        """Stop the delivery threads, the heartbeat and the notifier."""
        if self._lanes:  # they finish (or release) the rows in hand, then end
            self.stop_event.set()
            if self.notifier is not None:
                self.notifier.wake()
            for lane in self._lanes:
                lane.join()
            self._lanes = []
        self.heartbeat.stop()
        if self.notifier is not None:
            self.notifier.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def run(self) -> None:
        """Loop until :meth:`stop`; the rows in hand are always finished (or released)
        first. With several threads, each is a delivery lane (:meth:`_lane`) and this one
        runs the periodic jobs; with one, this thread does both in turn."""
        log.info("worker %s started", self.worker_id)
        self.heartbeat.start()
        with self.app.app_context():
            poll = current_settings().worker_poll_seconds
            self.notifier = Notifier(db.engine)
            self.notifier.start()
            if self.threads > 1:
                self._run_lanes(poll)
            else:
                self._run_alone(poll)
        self.close()
        log.info("worker %s stopped", self.worker_id)

    def _run_alone(self, poll: float) -> None:
        assert self.notifier is not None
        while not self.stop_event.is_set():
            seen = self.notifier.generation()
            try:
                handled = self.run_once()
                self.run_periodic()
            except Exception:
                log.exception("worker loop error; retrying after a pause")
                db.session.rollback()
                handled = 0
            finally:
                db.session.remove()
            if not handled and not self.stop_event.is_set():
                self.notifier.wait(poll, since=seen)  # new work (NOTIFY) ends it at once

    def _run_lanes(self, poll: float) -> None:
        self._breakers()  # made once, before the lanes share it
        self._lanes = [threading.Thread(target=self._lane, args=(poll,), daemon=True,
                                        name=f"optin-deliver-{i}") for i in range(self.threads)]
        for lane in self._lanes:
            lane.start()
        while not self.stop_event.is_set():
            try:
                self.run_periodic()
            except Exception:
                log.exception("periodic jobs error; retrying after a pause")
                db.session.rollback()
            finally:
                db.session.remove()
            self.stop_event.wait(max(poll, PERIODIC_SECONDS))

    def stop(self, *_: object) -> None:
        self.stop_event.set()
        if self.notifier is not None:
            self.notifier.wake()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
