"""Every ``OPTIN_*`` setting, declared once, parsed and validated once at start-up.

Nothing else in the package reads the environment: the app factory builds one
:class:`Settings` and everything asks ``current_settings()`` (or receives it).
A wrong value stops the app with one line that names the variable.
``python -m optin.config`` prints the README's table of them.
"""

from __future__ import annotations

from flask import current_app

from optin.config.errors import ConfigError
from optin.config.mail import MailFolder, MailTransport, SMTPServer, parse_mail_url
from optin.config.resources import MIGRATIONS_DIR, TEMPLATE_DIR
from optin.config.settings import DEVELOPMENT_OPERATOR, Settings, unknown_variables
from optin.config.storage import RedisKind, SharedStorage


def current_settings() -> Settings:
    """The settings of the running app."""
    settings: Settings = current_app.extensions["optin.settings"]
    return settings


__all__ = [
    "ConfigError",
    "DEVELOPMENT_OPERATOR",
    "MIGRATIONS_DIR",
    "MailFolder",
    "MailTransport",
    "RedisKind",
    "SMTPServer",
    "Settings",
    "SharedStorage",
    "TEMPLATE_DIR",
    "current_settings",
    "parse_mail_url",
    "unknown_variables",
]
