"""Prometheus metrics: the counters the domain bumps, and the backlog read at scrape time.

The domain calls the small functions below (``signup``, ``unsubscribed``, …);
nothing else in the package touches prometheus-client. Labels are lists, kinds,
origins and endpoints, never personal data.

Counters live in the app that counts (each app its own registry, made by
``init_app``, so two apps in one process never add to each other's counts),
and so in the process that counts. With several gunicorn workers (and
``optin worker`` processes) on one host, ``OPTIN_METRICS_DIR`` puts them in
prometheus-client's multi-process mode: each process writes its own files there
and ``/metrics`` adds them up. The mode is chosen when the process's first app is
made (:func:`init_app`), before anything is counted; importing this module changes
nothing. The outbox gauges are not counted but read from
the database at each scrape (:class:`BacklogCollector`, with the query the app
factory hands to :func:`init_app`: the outbox's own), so they are right
whichever process or host answers.

Counts caused by a state change are bumped when its transaction commits
(:func:`_on_commit`): a rolled-back signup counts nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from flask import Flask, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from optin.config import ConfigError, Settings
from optin.extensions import after_commit, db
from optin.models import utcnow

# No ``*_created`` series: multi-process mode has none, so both modes answer the same.
disable_created_metrics()


OPERATOR_REFUSALS = ("missing", "invalid")


@dataclass
class Counters:
    """One app's counters, in a registry of its own."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, registry=self.registry)

        self.signups = counter(
            "optin_signups", "Signups accepted, by list and outcome (new, repeated, throttled: "
            "a pending signup asked again within the resend interval, capped: "
            "OPTIN_MAILS_PER_ADDRESS_PER_DAY reached, confirmed: already subscribed, honeypot)",
            ["list", "outcome"])
        self.confirmations = counter(
            "optin_confirmations", "Consents confirmed through the link, by list", ["list"])
        self.unsubscribes = counter(
            "optin_unsubscribes", "Withdrawals, by origin (link, one_click, activecampaign, "
            "operator) and kind (unsubscribed, complaint, erased)", ["origin", "kind"])
        self.mails = counter(
            "optin_mail_deliveries", "Mails handed to the mail server, by template", ["template"])
        self.mail_failures = counter(
            "optin_mail_delivery_failures",
            "Mails the mail server did not take (retried later), by template", ["template"])
        self.ac_requests = counter(
            "optin_activecampaign_requests",
            "ActiveCampaign API calls by endpoint and HTTP status (0: no answer)",
            ["endpoint", "status"])
        self.dead_letters = counter(
            "optin_outbox_dead_letters", "Outbox rows given up on, by kind", ["kind"])
        self.overdue = counter(
            "optin_outbox_overdue", "Failed attempts of outbox rows that are never given up "
            "(a queued withdrawal) past the point where another row would be a dead letter",
            ["kind"])
        self.time_to_send = Histogram(
            "optin_mail_time_to_send_seconds", "From the outbox row's enqueue (the signup's, "
            "the confirmation's commit) until the relay took the mail, by template",
            ["template"], registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600))
        self.operator_refused = counter(
            "optin_operator_refused", "Operator API calls refused with 401, by reason "
            "(missing: no bearer token; invalid: one that is not configured)", ["reason"])
        for reason in OPERATOR_REFUSALS:  # present at 0, so an alert on a rise sees the start
            self.operator_refused.labels(reason)


COUNTERS_EXTENSION = "optin.metrics"
# The folder this process counts in (None: in memory), fixed by its first app.
_COUNTING_IN: list[Path | None] = []
_BACKLOG = "optin.ops.metrics.backlog"


class KindBacklog(Protocol):
    """One outbox kind's queue, as ``delivery.outbox.backlog_by_kind`` reports it."""

    @property
    def kind(self) -> str: ...
    @property
    def pending(self) -> int: ...
    @property
    def dead(self) -> int: ...
    @property
    def oldest_pending(self) -> datetime | None: ...


BacklogQuery = Callable[[datetime], Iterable[KindBacklog]]


class DestinationState(Protocol):
    """One destination's circuit breaker, as ``delivery.breaker.states`` reports it."""

    @property
    def destination(self) -> str: ...
    @property
    def is_open(self) -> bool: ...
    @property
    def failures(self) -> int: ...


BreakerQuery = Callable[[], Iterable[DestinationState]]
_BREAKERS = "optin.ops.metrics.breakers"


def _counters() -> Counters:
    counters: Counters = current_app.extensions[COUNTERS_EXTENSION]
    return counters


def multiprocess_mode() -> bool:
    """Whether prometheus-client runs in multi-process mode (OPTIN_METRICS_DIR was set)."""
    return values.ValueClass is not values.MutexValue


# --- what the domain calls ----------------------------------------------------------------


def signup(list_slug: str, outcome: str, session: Session | None = None) -> None:
    counter = _counters().signups
    _on_commit(session, lambda: counter.labels(list_slug, outcome).inc())


def honeypot() -> None:
    """A bot filled the hidden field: nothing is stored, so nothing waits for a commit."""
    _counters().signups.labels("-", "honeypot").inc()


def confirmed(list_slug: str, session: Session | None = None) -> None:
    counter = _counters().confirmations
    _on_commit(session, lambda: counter.labels(list_slug).inc())


def unsubscribed(origin: str, kind: str = "unsubscribed", session: Session | None = None) -> None:
    counter = _counters().unsubscribes
    _on_commit(session, lambda: counter.labels(origin, kind).inc())


def mail_delivered(template: str) -> None:
    _counters().mails.labels(template).inc()


def mail_time_to_send(template: str, seconds: float) -> None:
    """Time to inbox as far as we can see it: enqueued → accepted by the relay."""
    _counters().time_to_send.labels(template).observe(max(0.0, seconds))


def mail_failed(template: str) -> None:
    _counters().mail_failures.labels(template).inc()


def activecampaign_response(endpoint: str, status: int) -> None:
    """The ActiveCampaign client's ``on_response`` hook (status 0: timeout, no connection)."""
    _counters().ac_requests.labels(endpoint, str(status)).inc()


def dead_letter(kind: str) -> None:
    _counters().dead_letters.labels(kind).inc()


def overdue(kind: str) -> None:
    """A row that is never given up failed past its attempts or horizon: alert on it."""
    _counters().overdue.labels(kind).inc()


def operator_refused(reason: str) -> None:
    """An operator call without a valid token (``missing`` or ``invalid``); labelled by
    reason only, never by token or client."""
    _counters().operator_refused.labels(reason).inc()


def _on_commit(session: Session | None, bump: Callable[[], None]) -> None:
    """Bump when the current transaction commits; forget it if it rolls back.

    The counter is looked up now, in the app that counts: the commit may come later.
    """
    after_commit(bump, session)


# --- what /metrics answers ----------------------------------------------------------------


class BacklogCollector(Collector):
    """Outbox depth, age and dead letters by kind, read from the database at scrape time
    (in an app context, with the query given to :func:`init_app`)."""

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("optin_database_up", "1 if the database answered this scrape")
        pending = GaugeMetricFamily("optin_outbox_pending", "Outbox rows waiting, by kind",
                                    labels=["kind"])
        age = GaugeMetricFamily("optin_outbox_oldest_pending_age_seconds",
                                "Age of the oldest waiting outbox row, by kind", labels=["kind"])
        dead = GaugeMetricFamily("optin_outbox_dead", "Dead letters waiting for an operator, "
                                 "by kind", labels=["kind"])
        lag = GaugeMetricFamily("optin_outbox_lag_seconds", "How long the oldest due outbox "
                                "row has been due and not delivered, by kind (0: workers keep "
                                "up)", labels=["kind"])
        breaker_open = GaugeMetricFamily("optin_breaker_open", "1 while a destination's circuit "
                                         "breaker holds its rows back", labels=["destination"])
        breaker_failures = GaugeMetricFamily("optin_breaker_failures", "Consecutive failures "
                                             "of a destination", labels=["destination"])
        backlog: BacklogQuery = current_app.extensions[_BACKLOG]
        breakers: BreakerQuery | None = current_app.extensions.get(_BREAKERS)
        try:
            now = utcnow()
            kinds = list(backlog(now))
            destinations = list(breakers()) if breakers is not None else []
            db.session.rollback()
        except Exception:  # a scrape must answer; the database's state is a metric of its own
            db.session.rollback()
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for queue in kinds:
            if queue.dead:
                dead.add_metric([queue.kind], queue.dead)
            if queue.pending and queue.oldest_pending is not None:
                pending.add_metric([queue.kind], queue.pending)
                age.add_metric([queue.kind], max(0.0, (now - queue.oldest_pending).total_seconds()))
            oldest_due = getattr(queue, "oldest_due", None)
            if queue.pending:
                lag.add_metric([queue.kind], max(0.0, (now - oldest_due).total_seconds())
                               if oldest_due is not None else 0.0)
        for state in destinations:
            breaker_open.add_metric([state.destination], 1 if state.is_open else 0)
            breaker_failures.add_metric([state.destination], state.failures)
        yield from (up, pending, age, dead, lag, breaker_open, breaker_failures)


def exposition(include_backlog: bool = True) -> tuple[bytes, str]:
    """The text ``/metrics`` answers: this host's counters (this app's, and the process's
    own gauges), then the backlog."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(_counters().registry) + generate_latest(REGISTRY)
    if include_backlog:
        backlog = CollectorRegistry()
        backlog.register(BacklogCollector())
        body += generate_latest(backlog)
    return body, CONTENT_TYPE_LATEST


class _ProcessAndBacklog(Collector):
    """What ``optin worker --metrics-port`` serves: the same as ``/metrics``."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        if multiprocess_mode():
            yield from multiprocess.MultiProcessCollector(None).collect()
        else:
            yield from self.app.extensions[COUNTERS_EXTENSION].registry.collect()
            yield from REGISTRY.collect()
        with self.app.app_context():
            yield from BacklogCollector().collect()


def serve(app: Flask, port: int, addr: str = "0.0.0.0") -> Any:  # noqa: S104 - a scrape target
    """Serve this process's metrics (the host's, with OPTIN_METRICS_DIR) on ``port``, in a
    daemon thread: for ``optin worker`` processes on hosts that run no web process."""
    registry = CollectorRegistry()
    registry.register(_ProcessAndBacklog(app))
    server, _thread = start_http_server(port, addr, registry=registry)
    return server


def mark_process_dead(pid: int, metrics_dir: Path | None) -> None:
    """gunicorn's ``child_exit`` (in the master, which has no app): a dead worker's live
    gauges go; its counts stay summed."""
    if metrics_dir is not None:
        multiprocess.mark_process_dead(pid, str(metrics_dir))


def init_app(app: Flask, settings: Settings, *, backlog: BacklogQuery,
             breakers: BreakerQuery | None = None) -> None:
    """Give the app its counters, counting in OPTIN_METRICS_DIR (prometheus-client's
    multi-process mode) or in memory, and the query for the outbox gauges (ops may not
    import the outbox).

    The mode belongs to the process, so its first app chooses it, before any count
    exists; a later app of the same process that asks for another is refused.
    """
    if not _COUNTING_IN:
        if settings.metrics_dir is not None:
            _count_in_files(settings.metrics_dir)
        _COUNTING_IN.append(settings.metrics_dir)
    elif _COUNTING_IN[0] != settings.metrics_dir:
        where = f"in {_COUNTING_IN[0]}" if _COUNTING_IN[0] else "in memory"
        raise ConfigError("OPTIN_METRICS_DIR must be the same for every app of one process "
                          f"(this one counts {where})")
    app.extensions[_BACKLOG] = backlog
    app.extensions[_BREAKERS] = breakers
    app.extensions[COUNTERS_EXTENSION] = Counters()


def _count_in_files(directory: Path) -> None:
    """What prometheus-client does at import when PROMETHEUS_MULTIPROC_DIR is set: its
    values read the variable when they are made (at each counter's first labels)."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if not multiprocess_mode():
        values.ValueClass = values.MultiProcessValue()


__all__ = [
    "activecampaign_response", "confirmed", "dead_letter", "exposition", "init_app",
    "mail_delivered", "mail_failed", "mail_time_to_send", "mark_process_dead",
    "multiprocess_mode", "operator_refused",
    "serve", "signup", "unsubscribed",
]
