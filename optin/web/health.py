"""Liveness and readiness for the platform."""

from __future__ import annotations

from functools import cache

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Response, jsonify
from flask_smorest import Blueprint
from sqlalchemy import text

from ..config import MIGRATIONS_DIR
from ..extensions import db

bp = Blueprint("health", __name__, description="Platform probes")


@cache
def migration_heads() -> frozenset[str]:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


@bp.route("/healthz", methods=["GET"])
def healthz() -> Response:
    """The process is alive (no dependencies checked)."""
    return jsonify(status="ok")


@bp.route("/readyz", methods=["GET"])
def readyz() -> Response:
    """Ready for traffic: the database answers and its schema is at the newest migration."""
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # any failure to reach the database means not ready
        response = jsonify(status="unavailable", database="unreachable",
                           error=type(exc).__name__)
        response.status_code = 503
        return response
    if current != migration_heads():
        response = jsonify(status="unavailable", database="ok",
                           migrations="behind: run `optin db upgrade`")
        response.status_code = 503
        return response
    return jsonify(status="ok", database="ok", migrations="ok")
