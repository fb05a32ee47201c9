"""Flask extensions, created once here and bound to the app in ``create_app``.

Creating them at module level (and binding later) is what lets every other
module import ``db`` without importing the app: no circular imports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, Table, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session

from optin.schemas import ProblemSchema

log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    if TYPE_CHECKING:
        # Every model maps one Table (no joined or custom selectables), which the hot
        # paths' hand-written statements rely on.
        __table__: ClassVar[Table]


db = SQLAlchemy(model_class=Base)
migrate = Migrate()

_AFTER_COMMIT = "optin.after_commit"


def after_commit(work: Callable[[], None], session: Session | None = None) -> None:
    """Do ``work`` once the current transaction commits; forget it if it rolls back.

    For effects outside the database that must count only what was committed (metrics,
    the per-address mail budget in Redis). A failing ``work`` is logged, never raised:
    the transaction is already committed.
    """
    (session or db.session()).info.setdefault(_AFTER_COMMIT, []).append(work)


@contextmanager
def savepoint(session: Session | scoped_session[Any] | None = None) -> Iterator[None]:
    """A SAVEPOINT whose rollback also forgets the :func:`after_commit` work registered
    inside it (a row of a group that failed spends nothing of an address's mail budget),
    which a plain ``begin_nested`` keeps until the outer transaction ends."""
    session = session or db.session()
    mark = len(session.info.get(_AFTER_COMMIT, []))
    try:
        with session.begin_nested():
            yield
    except BaseException:
        del session.info.get(_AFTER_COMMIT, [])[mark:]
        raise


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: the transaction may still roll back
    for work in session.info.pop(_AFTER_COMMIT, []):
        try:
            work()
        except Exception:
            log.exception("work after a commit failed")


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_AFTER_COMMIT, None)

#: A pooled connection idle for longer than this is checked before it is handed out.
IDLE_PING_SECONDS = 2.0


def ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use, but only one that sat idle.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more database
    round trip per request, a tenth of a signup's time under load. A connection
    returned a moment ago is alive, and when one dies in use SQLAlchemy
    invalidates the whole pool by itself; what goes stale unnoticed is an idle
    connection (a database restart at night, a failover, a firewall's idle
    timeout). This is SQLAlchemy's documented custom pessimistic-disconnect
    recipe (a ``checkout`` hook raising ``DisconnectionError``, after which the
    pool connects afresh), limited to those.
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure: let the pool open a new connection
            raise DisconnectionError("stale pooled connection") from exc


class ProblemApi(Api):
    """flask-smorest's Api, documenting its default error answers as RFC 9457 problems."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self) -> None:
        # flask-smorest registers one shared content type for successes and errors;
        # ours differ (problems.py answers errors as application/problem+json).
        self.DEFAULT_RESPONSE_CONTENT_TYPE = "application/problem+json"
        try:
            super()._register_responses()
        finally:
            del self.DEFAULT_RESPONSE_CONTENT_TYPE


api = ProblemApi()
