"""The ``optin`` command (console script and ``python -m optin``).

A Flask CLI group around :func:`optin.create_app`, so ``flask --app optin …``
offers the same commands (they live in ``optin.cli`` and are added to every
app's ``app.cli``).
"""

from __future__ import annotations

import sys

import click
from flask import Flask
from flask.cli import FlaskGroup

from optin import create_app
from optin.config import ConfigError


def _create_app() -> Flask:
    try:
        return create_app()
    except ConfigError as exc:
        click.echo(f"optin: configuration error: {exc}", err=True)
        sys.exit(2)


cli = FlaskGroup(create_app=_create_app, help="optin: newsletter double opt-in service.")


def main() -> None:
    cli.main(prog_name="optin")


if __name__ == "__main__":
    main()
