"""optin: newsletter double opt-in with a court-ready proof of consent.

``create_app`` builds the Flask app: settings from the ``OPTIN_*``
environment (or ``test_config``), extensions, mail backend, blueprints, CLI,
and the worker's wiring: which handler delivers each outbox kind, and which
jobs run on a schedule. Nothing registers itself by being imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from flask import Flask
from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader
from werkzeug.middleware.proxy_fix import ProxyFix

from optin import brand, cli, web
from optin.activecampaign import backfill, reconcile, sync
from optin.config import MIGRATIONS_DIR, TEMPLATE_DIR, Settings, unknown_variables
from optin.consent import (
    checkpoints,
    confirmations,
    intake,
    lists,
    mailcap,
    relink,
    resends,
    withdrawals,
)
from optin.delivery import breaker, notifications, outbox, worker
from optin.delivery.mailer import MailTemplates, backend_for
from optin.delivery.worker import PeriodicJob
from optin.extensions import api, db, migrate, ping_when_idle
from optin.models import OutboxKind
from optin.ops import logs, metrics, pages, problems, ratelimits, requestjson
from optin.privacy import retention

__all__ = ["OUTBOX_DESTINATIONS", "OUTBOX_HANDLERS", "OUTBOX_UNDYING", "PERIODIC_JOBS",
           "create_app", "load_settings"]

#: Who delivers each kind of outbox row. Every OutboxKind has exactly one entry.
OUTBOX_HANDLERS: Mapping[OutboxKind, outbox.Handler] = {
    OutboxKind.SIGNUP_INTAKE: intake.process,
    OutboxKind.CONFIRM_INTAKE: confirmations.process,
    OutboxKind.WITHDRAWAL_INTAKE: withdrawals.process,
    OutboxKind.RELINK_INTAKE: relink.process,
    OutboxKind.RESEND_INTAKE: resends.process,
    OutboxKind.CONFIRM_MAIL: notifications.send_confirmation,
    OutboxKind.WELCOME_MAIL: notifications.send_welcome,
    OutboxKind.GOODBYE_MAIL: notifications.send_goodbye,
    OutboxKind.UNSUBSCRIBE_LINK_MAIL: notifications.send_unsubscribe_link,
    OutboxKind.AC_SUBSCRIBE: sync.push_subscribe,
    OutboxKind.AC_UNSUBSCRIBE: sync.push_unsubscribe,
}

#: Where each kind of outbox row goes, for that destination's circuit breaker (a kind
#: not named here has none; its failures stay its own).
OUTBOX_DESTINATIONS: Mapping[OutboxKind, str] = {
    OutboxKind.CONFIRM_MAIL: notifications.DESTINATION,
    OutboxKind.WELCOME_MAIL: notifications.DESTINATION,
    OutboxKind.GOODBYE_MAIL: notifications.DESTINATION,
    OutboxKind.UNSUBSCRIBE_LINK_MAIL: notifications.DESTINATION,
    OutboxKind.AC_SUBSCRIBE: sync.DESTINATION,
    OutboxKind.AC_UNSUBSCRIBE: sync.DESTINATION,
}

#: Kinds never made dead letters: a queued withdrawal given up on would be a withdrawal
#: lost (mails would go on after it), so it is retried, an hour apart at most, and counted
#: in ``optin_outbox_overdue_total`` for an alert, until it applies.
OUTBOX_UNDYING: frozenset[OutboxKind] = frozenset({OutboxKind.WITHDRAWAL_INTAKE})

#: What the workers run on a schedule, once per interval between all of them.
PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("retention", lambda: timedelta(days=1), retention.run),
    PeriodicJob("ac_reconcile", reconcile.interval, reconcile.reconcile_all),
    PeriodicJob("ledger_checkpoint", checkpoints.interval, checkpoints.periodic),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings ``create_app(environ)`` runs with (``os.environ`` by default), for
    processes that need them before any app exists (``gunicorn.conf.py``)."""
    environ = os.environ if environ is None else environ
    return Settings.from_env(environ, _instance_path(environ))


def _instance_path(environ: Mapping[str, str]) -> Path:
    """OPTIN_INSTANCE_PATH, else Flask's instance folder of this package."""
    return Path(Flask(__name__, instance_path=environ.get("OPTIN_INSTANCE_PATH") or None)
                .instance_path)


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """Build the app. ``test_config`` replaces the environment (tests stay hermetic)."""
    environ: Mapping[str, str] = os.environ if test_config is None else test_config
    settings = load_settings(environ)
    app = Flask(__name__, template_folder=str(TEMPLATE_DIR),
                instance_path=str(settings.instance_path))
    settings.instance_path.mkdir(parents=True, exist_ok=True)

    logs.init_app(app, settings)
    metrics.init_app(app, settings, backlog=outbox.backlog_by_kind,  # before anything counts
                     breakers=breaker.states)
    for name in unknown_variables(environ):
        app.logger.warning("ignoring unknown setting %s (typo?)", name)

    app.config.from_mapping(settings.flask_config())
    requestjson.init_app(app)
    pages.init_app(app)
    app.extensions["optin.settings"] = settings
    app.extensions["optin.brand"] = settings.brand
    app.extensions["optin.mail_templates"] = MailTemplates(settings.template_dir)
    if settings.template_dir is not None:
        _prefer_operator_templates(app, settings.template_dir)
    for problem in brand.problems(settings.brand):
        app.logger.warning("brand: %s", problem)
    app.extensions["optin.mail_backend"] = backend_for(settings.mail)

    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]

    db.init_app(app)
    with app.app_context():
        ping_when_idle(db.engine)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    ratelimits.init_app(app, settings)
    mailcap.init_app(app, settings)
    worker.init_app(app, handlers=OUTBOX_HANDLERS, jobs=PERIODIC_JOBS,
                    destinations=OUTBOX_DESTINATIONS, undying=OUTBOX_UNDYING)
    lists.init_app(app)
    sync.init_app(app)
    backfill.init_app(app)
    api.init_app(app)
    web.init_app(app)
    problems.init_app(app)  # after the Api, whose own error handler it replaces
    cli.init_app(app)
    return app


def _prefer_operator_templates(app: Flask, template_dir: Path) -> None:
    """OPTIN_TEMPLATE_DIR's ``pages/…``, ``embed/…`` are found before the built-in ones."""
    builtin: BaseLoader | None = app.jinja_loader
    loaders: list[BaseLoader] = [FileSystemLoader(str(template_dir))]
    if builtin is not None:
        loaders.append(builtin)
    app.jinja_loader = ChoiceLoader(loaders)

