"""Graceful failure: the database lost before or in the middle of a request.

The app talks to the real PostgreSQL through a small TCP proxy the test can
cut: every open connection is dropped and new ones are refused until it heals.
A lost database is a 503 with Retry-After (problem+json for the API, the
friendly page for browsers), nothing is half-written, and once the database is
back the next request works. (SMTP down: tests/test_outbox.py,
``test_smtp_outage_delays_but_never_drops``.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from optin import extensions
from optin.consent import lists
from optin.extensions import db
from optin.models import ConsentEvent, OutboxItem, Subscription

from .conftest import PG_URL, build_app, deliver, links, signup

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL behind a TCP proxy the "
                                                   "test can cut")

LEAKS = ("Traceback", 'File "', "OperationalError", "psycopg", "sqlalchemy")


class TCPProxy:
    """Forwards a local port to the database; ``cut()`` drops every connection and
    refuses new ones until ``heal()``. (By hand: a few lines of sockets are all a
    controllable outage needs.)"""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        self._drop(src, dst)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        self.up = False
        with self.lock:
            dropped, self.open = self.open, set()
        self._drop(*dropped)

    def heal(self) -> None:
        self.up = True

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy() -> Iterator[TCPProxy]:
    url = make_url(PG_URL)
    proxy = TCPProxy(url.host or "127.0.0.1", url.port or 5432)
    yield proxy
    proxy.close()


@pytest.fixture
def app(app_config: dict[str, str], proxy: TCPProxy, mailbox) -> Iterator[Flask]:
    """The app, its database reached only through ``proxy``."""
    app_config["OPTIN_WORKER_POLL_SECONDS"] = "0.1"
    app_config["OPTIN_DATABASE_URL"] = make_url(PG_URL).set(
        host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app = build_app(app_config)
    with app.app_context():
        mailing_list = lists.create_list("newsletter", "News", default_locale="de")
        for locale, text in lists.DEMO_TEXTS.items():
            lists.add_consent_text(mailing_list, locale, text)
    yield app
    proxy.heal()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _assert_unavailable(response: Any, mimetype: str) -> None:
    assert response.status_code == 503
    assert response.mimetype == mimetype
    assert int(response.headers["Retry-After"]) > 0
    body = response.get_data(as_text=True)
    assert not [leak for leak in LEAKS if leak in body]


def _nothing_half_written(app: Flask) -> None:
    """Every subscription has its signup event and its confirmation mail queued."""
    with app.app_context():
        for sub in db.session.scalars(select(Subscription)):
            kinds = [e.kind for e in sub.events]
            assert kinds[0] == "signup_requested", kinds
            assert db.session.scalar(select(func.count()).select_from(OutboxItem).where(
                OutboxItem.subscription_id == sub.id, OutboxItem.kind == "confirm_mail")) >= 1


def test_database_down_is_a_503_and_the_next_request_after_it_works(app, client, proxy):
    assert signup(client, "before@example.org").status_code == 202
    proxy.cut()

    _assert_unavailable(signup(client, "down@example.org"), "application/problem+json")
    form = {"email": "down@example.org", "list": "newsletter", "consent_text_version": "1"}
    _assert_unavailable(client.post("/v1/subscriptions", data=form,
                                    headers={"Accept": "text/html"}), "text/html")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503

    proxy.heal()
    assert signup(client, "after@example.org").status_code == 202  # stale connections replaced
    assert client.get("/readyz").status_code == 200
    with app.app_context():
        addresses = set(db.session.scalars(select(Subscription.email)))
    assert addresses == {"before@example.org", "after@example.org"}
    _nothing_half_written(app)


def test_an_idle_connection_that_died_is_replaced_before_a_request_uses_it(
        app, client, proxy, monkeypatch):
    """A database restart while the pool sits idle costs no request (extensions.ping_when_idle)."""
    assert signup(client, "before@example.org").status_code == 202
    proxy.cut()
    proxy.heal()  # the database is back; the pooled connection is dead and nobody knows
    monkeypatch.setattr(extensions, "IDLE_PING_SECONDS", 0.0)  # it has sat idle long enough
    assert signup(client, "after@example.org").status_code == 202


def test_a_connection_just_used_is_not_pinged_again(app, client, proxy, monkeypatch):
    """The ping is for idle connections only: under load, no extra round trip per request."""
    with app.app_context():
        dialect = db.engine.dialect
    pings: list[object] = []
    ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda conn: pings.append(conn) or ping(conn))
    client = FlaskClient(app, app.response_class)  # the request's own connections only
    assert signup(client, "warm@example.org").status_code == 202
    assert signup(client, "busy@example.org").status_code == 202
    assert pings == []
    monkeypatch.setattr(extensions, "IDLE_PING_SECONDS", 0.0)
    assert signup(client, "idle@example.org").status_code == 202
    assert len(pings) == 1


def test_a_signup_cut_off_mid_transaction_leaves_nothing(app, client, proxy):
    with _armed(app, proxy):
        _assert_unavailable(signup(client, "mid@example.org"), "application/problem+json")
    proxy.heal()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Subscription)) == 0
        assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == 0
        assert db.session.scalar(select(func.count()).select_from(OutboxItem)) == 0
    assert signup(client, "mid@example.org").status_code == 202  # trying again works
    _nothing_half_written(app)


def test_a_confirmation_cut_off_mid_transaction_can_be_repeated(app, client, proxy, mailbox):
    assert signup(client, "anna@example.org").status_code == 202
    deliver(app)
    confirm = links(mailbox.to("anna@example.org")[-1])["confirm"]
    with _armed(app, proxy):
        _assert_unavailable(client.post(confirm), "text/html")  # a person clicked: a page
    proxy.heal()
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        assert sub.status == "pending"
        assert "confirmed" not in [e.kind for e in sub.events]
        assert db.session.scalar(select(func.count()).select_from(OutboxItem).where(
            OutboxItem.kind == "ac_subscribe")) == 0
    assert client.post(confirm).status_code == 303
    with app.app_context():
        assert db.session.scalar(select(Subscription.status)) == "confirmed"
    _nothing_half_written(app)


@contextlib.contextmanager
def _armed(app: Flask, proxy: TCPProxy) -> Iterator[None]:
    """Cut the database in the middle of the next request: right after its first
    write statement (ORM flush or Core statement alike), before the rest of its
    transaction and its commit."""
    fired: list[bool] = []

    def after_write(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not fired and statement.lstrip().split(None, 1)[0].upper() in WRITES:
            fired.append(True)
            proxy.cut()

    with app.app_context():
        engine = db.engine
    event.listen(engine, "after_cursor_execute", after_write)
    try:
        yield
    finally:
        event.remove(engine, "after_cursor_execute", after_write)
    assert fired, "the request never wrote"


WRITES = {"INSERT", "UPDATE", "DELETE", "WITH"}


def test_the_worker_outlives_the_outage_and_delivers_afterwards(app, client, proxy, mailbox):
    from optin.delivery.worker import Worker

    worker = Worker(app)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert signup(client, "early@example.org").status_code == 202
        assert mailbox.receiving.wait(20)
        proxy.cut()
        _assert_unavailable(signup(client, "lost@example.org"), "application/problem+json")
        worker.stop_event.wait(0.5)  # the worker meets the outage on its next polls
        assert thread.is_alive()
        proxy.heal()
        assert signup(client, "late@example.org").status_code == 202
        for _ in range(200):
            if mailbox.to("late@example.org"):
                break
            worker.stop_event.wait(0.1)
    finally:
        worker.stop()
        thread.join(20)
    assert [len(mailbox.to(a)) for a in ("early@example.org", "lost@example.org",
                                         "late@example.org")] == [1, 0, 1]
    _nothing_half_written(app)
