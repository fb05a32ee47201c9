"""Liveness and readiness for the platform."""

from __future__ import annotations

from functools import cache

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Response, jsonify
from sqlalchemy import text

from optin.config import MIGRATIONS_DIR
from optin.extensions import db
from optin.ops import metrics
from optin.ops.problems import problem
from optin.ops.requestjson import Blueprint
from optin.schemas import ProblemSchema, ReadySchema, StatusSchema

bp = Blueprint("health", __name__, description="Platform probes")


@cache
def migration_heads() -> frozenset[str]:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


@bp.route("/healthz", methods=["GET"])
@bp.response(200, StatusSchema, example={"status": "ok"})
def healthz() -> Response:
    """The process is alive (no dependencies checked).

    Readable from any origin (it says nothing but "ok"): after a failed ``fetch()``,
    embed.js asks it whether the service is up, to tell a CORS refusal (fall back to a
    plain form post) from an outage (say so in place, never navigate to an error page)."""
    response = jsonify(status="ok")
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.cache_control.no_store = True
    return response


@bp.route("/readyz", methods=["GET"])
@bp.response(200, ReadySchema, example={"status": "ok", "database": "ok", "migrations": "ok"})
@bp.alt_response(503, schema=ProblemSchema, content_type="application/problem+json",
                 description="The database does not answer, or its schema is behind",
                 example={"type": "about:blank", "title": "Service Unavailable", "status": 503,
                          "detail": "The database does not answer.", "database": "unreachable",
                          "error": "OperationalError"})
def readyz() -> Response:
    """Ready for traffic: the database answers and its schema is at the newest migration."""
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # any failure to reach the database means not ready
        db.session.rollback()
        return problem(503, "Service Unavailable", "The database does not answer.",
                       headers={"Retry-After": "5"}, database="unreachable",
                       error=type(exc).__name__)  # the class only: messages may hold the URL
    if current != migration_heads():
        return problem(503, "Service Unavailable",
                       "The database schema is not at the newest migration: run `optin db upgrade`.",
                       headers={"Retry-After": "30"}, database="ok", migrations="behind")
    return jsonify(status="ok", database="ok", migrations="ok")


@bp.route("/metrics", methods=["GET"])
@bp.doc(responses={"200": {"description": "Prometheus text exposition format",
                           "content": {"text/plain": {"schema": {"type": "string"}}}}})
def prometheus_metrics() -> Response:
    """Prometheus metrics: this host's counters and the outbox backlog (no personal data)."""
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
