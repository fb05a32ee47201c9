"""optin: newsletter double opt-in with a court-ready proof of consent.

``create_app`` builds the Flask app: settings from the ``OPTIN_*``
environment (or ``test_config``), extensions, mail backend, blueprints, CLI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from flask import Flask
from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader
from werkzeug.middleware.proxy_fix import ProxyFix

from . import brand, cli, limits, logs, metrics, problems, web
from .config import MIGRATIONS_DIR, TEMPLATE_DIR, Settings, unknown_variables
from .extensions import api, db, migrate, ping_when_idle
from .mailer import MailTemplates, backend_from_url

__all__ = ["create_app"]


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """Build the app. ``test_config`` replaces the environment (tests stay hermetic)."""
    environ: Mapping[str, str] = os.environ if test_config is None else test_config
    app = Flask(__name__, template_folder=str(TEMPLATE_DIR),
                instance_path=environ.get("OPTIN_INSTANCE_PATH") or None)
    settings = Settings.from_env(environ, Path(app.instance_path))
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    logs.init_app(app, settings)
    for name in unknown_variables(environ):
        app.logger.warning("ignoring unknown setting %s (typo?)", name)

    app.config.from_mapping(settings.flask_config())
    app.extensions["optin.settings"] = settings
    app.extensions["optin.brand"] = settings.brand
    app.extensions["optin.mail_templates"] = MailTemplates(settings.template_dir)
    if settings.template_dir is not None:
        _prefer_operator_templates(app, settings.template_dir)
    for problem in brand.problems(settings.brand):
        app.logger.warning("brand: %s", problem)
    app.extensions["optin.mail_backend"] = backend_from_url(settings.mail_url)

    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]

    db.init_app(app)
    with app.app_context():
        ping_when_idle(db.engine)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    limits.init_app(app)
    api.init_app(app)
    web.init_app(app)
    metrics.init_app(app)
    problems.init_app(app)  # after the Api, whose own error handler it replaces
    cli.init_app(app)
    return app


def _prefer_operator_templates(app: Flask, template_dir: Path) -> None:
    """OPTIN_TEMPLATE_DIR's ``pages/…``, ``embed/…`` are found before the built-in ones."""
    builtin: BaseLoader | None = app.jinja_loader
    loaders: list[BaseLoader] = [FileSystemLoader(str(template_dir))]
    if builtin is not None:
        loaders.append(builtin)
    app.jinja_loader = ChoiceLoader(loaders)  # type: ignore[method-assign,assignment]

