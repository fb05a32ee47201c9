"""Shared fixtures: the app on SQLite or PostgreSQL, a real SMTP server, helpers.

Set ``OPTIN_TEST_DATABASE_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1/test``)
to run everything against PostgreSQL; each test starts from an empty schema
built by the real migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import sqlalchemy as sa
import time_machine
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.orm import Session

from optin import create_app
from optin.consent import confirmations, intake, lists
from optin.delivery import outbox
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import OutboxItem, OutboxStatus, Subscription, utcnow

from .fake_activecampaign import FakeActiveCampaign

PG_URL = os.environ.get("OPTIN_TEST_DATABASE_URL")
SECRET = "test-secret-key-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """The first truthy answer of ``condition``, asked every ``interval`` seconds.

    For what another thread or process does (a server coming up, a mail
    arriving): the test goes on as soon as it happened, and fails after
    ``timeout`` seconds rather than hoping a fixed sleep was long enough.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = condition()
        except Exception:  # noqa: BLE001 - e.g. a server not listening yet; asked again
            if time.monotonic() >= deadline:
                raise
        else:
            if answer:
                return answer
            if time.monotonic() >= deadline:
                raise AssertionError(f"not true within {timeout} s: {condition}")
        time.sleep(interval)


# --- a real SMTP server ---------------------------------------------------------------


@contextmanager
def refused_recipients(mailbox: Mailbox, prefix: str, reply: str = "550 5.1.1 no such user"
                       ) -> Iterator[None]:
    """The test server refuses every recipient whose address starts with ``prefix``: a
    row's own failure, while the relay itself is fine."""

    async def handle_rcpt(server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if address.startswith(prefix):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    mailbox.handle_RCPT = handle_rcpt  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del mailbox.handle_RCPT  # type: ignore[attr-defined]


@dataclass
class Mailbox:
    """What the test SMTP server received, parsed."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0  # seconds each delivery takes (a slow server)
    receiving: threading.Event = field(default_factory=threading.Event)
    #: Keep a mail as soon as its data is in, before the (delayed) answer: a relay that
    #: delivers what it received even when the client went away before the 250.
    keep_unanswered: bool = False
    #: Ends every delay at once (a stalled relay that recovers): set it to stop stalling.
    released: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.receiving.set()
        if self.keep_unanswered:
            self._keep(envelope)
        if self.delay:
            deadline = time.monotonic() + self.delay
            while not self.released.is_set() and (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(left, 0.05))
        if not self.keep_unanswered:
            self._keep(envelope)
        return "250 Message accepted for delivery"

    def _keep(self, envelope: Any) -> None:
        if envelope.smtp_utf8:  # RFC 6532: headers in UTF-8
            message = email.message_from_string(envelope.content.decode(),
                                                policy=email.policy.default)
        else:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.envelopes.clear()
        self.delay = 0.0
        self.keep_unanswered = False
        self.receiving.clear()
        self.released.clear()

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if address in str(m["To"])]


class SMTPServer:
    """aiosmtpd on loopback; ``stop()``/``start()`` simulate an outage on the same port.
    ``options`` go to aiosmtpd's Controller (``tls_context``, ``authenticator``, …)."""

    def __init__(self, **options: Any) -> None:
        self.port = free_port()
        self.mailbox = Mailbox()
        self.controller: Controller | None = None
        self.options = options

    def start(self) -> None:
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port,
                                     **self.options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@dataclass
class SecureSMTP:
    """A relay as production has one: STARTTLS required, with a certificate from a test CA
    (``cafile``), and AUTH with one user and password."""

    server: SMTPServer
    cafile: Path
    user: str = "news@example.com"
    password: str = "smtp-pass:/w0rd-9f2c41d7e5"

    def url(self, password: str | None = None, port: int | None = None) -> str:
        secret = quote(self.password if password is None else password, safe="")
        return (f"smtp://{quote(self.user, safe='')}:{secret}@127.0.0.1:"
                f"{port or self.server.port}?starttls=1&cafile={self.cafile}&timeout=5")


@pytest.fixture(scope="session")
def secure_smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureSMTP]:
    import ssl

    import trustme
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    cafile = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    relay = SecureSMTP(SMTPServer(), cafile)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == relay.user.encode()
              and auth_data.password == relay.password.encode())
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    relay.server.options = {"tls_context": context, "require_starttls": True,
                            "authenticator": authenticate, "auth_required": True}
    relay.server.start()
    yield relay
    relay.server.stop()


@pytest.fixture
def mailbox(smtp_server: SMTPServer) -> Iterator[Mailbox]:
    if smtp_server.controller is None:
        smtp_server.start()
    smtp_server.mailbox.clear()
    yield smtp_server.mailbox


# --- the app -----------------------------------------------------------------------------


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def make_config(tmp_path: Path, **overrides: str) -> dict[str, str]:
    config = {
        "OPTIN_ENV": "production",
        "OPTIN_INSTANCE_PATH": str(tmp_path / "instance"),
        "OPTIN_DATABASE_URL": PG_URL or f"sqlite:///{tmp_path / 'optin.db'}",
        "OPTIN_SECRET_KEY": SECRET,
        "OPTIN_BASE_URL": "http://newsletter.test",
        "OPTIN_MAIL_FROM": "news@example.com",
        "OPTIN_MAIL_URL": (tmp_path / "mail").as_uri(),
        "OPTIN_ADMIN_TOKENS": f"ops:{ADMIN_TOKEN}",
        "OPTIN_AC_WEBHOOK_SECRET": "webhook-secret-0123456789",
        "OPTIN_RESEND_INTERVAL_MINUTES": "15",
        # Real limits, in memory per app, high enough for tests that sign up a lot from
        # one test client; tests/test_limits.py lowers them.
        "OPTIN_RATELIMIT_SIGNUP": "1000/minute",
        "OPTIN_RATELIMIT_LINKS": "1000/minute",
        "OPTIN_RATELIMIT_WEBHOOK": "1000/minute",
        "OPTIN_MAILS_PER_ADDRESS_PER_DAY": "50",
        "OPTIN_CONTROLLER_NAME": "Example Newsletter GmbH",
        "OPTIN_CONTROLLER_ADDRESS": "Musterstraße 1; 10115 Berlin; Deutschland",
    }
    config.update(overrides)
    return config


def settle_intake(app: Flask) -> int:
    """Run the worker's intake handlers for every queued signup request and confirmation
    click, as a worker with no pick-up delay would, and nothing else (the mails and syncs
    they queue stay queued for :func:`deliver`); how many were processed. The handlers
    and the outbox's delivery are the real ones; only the claim is narrowed to intake
    rows. Each call claims as a worker of its own, so racing requests each deliver only
    the rows they claimed. On SQLite one settles at a time, as the one delivery thread a
    worker runs there does."""
    settler = f"{SETTLING_WORKER}:{uuid.uuid4().hex[:8]}"
    one_writer = _SQLITE_SETTLING if not PG_URL else contextlib.nullcontext()
    with one_writer, app.app_context():
        rows = OutboxItem.__table__
        queued = sa.and_(rows.c.kind.in_((intake.KIND, confirmations.KIND)),
                         rows.c.status == OutboxStatus.PENDING, rows.c.claimed_by.is_(None))
        if db.session.scalar(sa.select(rows.c.id).where(queued).limit(1)) is None:
            db.session.rollback()  # nothing queued: no transaction to commit
            return 0
        db.session.execute(sa.update(rows).where(queued).values(
            claimed_by=settler, claimed_until=utcnow() + outbox.LEASE))
        db.session.commit()
        ids = list(db.session.scalars(
            sa.select(rows.c.id).where(rows.c.claimed_by == settler).order_by(rows.c.id)))
        db.session.rollback()
        for item_id in ids:
            outbox.deliver(item_id, settler, max_attempts=5, horizon=timedelta(days=1))
        db.session.remove()
        return len(ids)


SETTLING_WORKER = "tests:settle-intake"
_SQLITE_SETTLING = threading.Lock()


class SettlingClient(FlaskClient):
    """The test client of a service whose worker takes each signup and confirmation at
    once: after every answered ``POST /v1/subscriptions`` or ``POST /confirm/…`` the
    queued intake is processed (``settle_intake``), so tests see the state machine's
    result as they did when the request ran it. Tests of the intake itself use a plain
    ``FlaskClient``."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        path = str(args[0] if args else kwargs.get("path", ""))
        clicked = "/confirm/" in path and kwargs.get("method") == "POST"
        if "/v1/subscriptions" in path or clicked:
            try:
                settle_intake(self.application)
            except sa.exc.DBAPIError:  # the database is down: a worker would try again later
                with self.application.app_context():
                    db.session.remove()
        return response


def build_app(config: dict[str, str]) -> Flask:
    """An app whose database is empty and migrated to head; its test clients settle the
    signup intake after each signup (:class:`SettlingClient`)."""
    from flask_migrate import upgrade

    if PG_URL:
        _reset_postgres(PG_URL)
    app = create_app(config)
    app.test_client_class = SettlingClient
    with app.app_context():
        upgrade()
    return app


@pytest.fixture
def app_config(tmp_path: Path, smtp_server: SMTPServer) -> dict[str, str]:
    """The settings of the app under test. Override it in a module, or change it in a
    fixture named ``*_config`` (like ``ac_config``): ``app`` applies those first."""
    return make_config(tmp_path, OPTIN_MAIL_URL=smtp_server.url)


@pytest.fixture
def app(app_config: dict[str, str], mailbox: Mailbox,
        request: pytest.FixtureRequest) -> Iterator[Flask]:
    """The app under test, built from ``app_config`` once every ``*_config`` fixture the test
    uses has had its say, whatever the order of the test's arguments."""
    for name in request.fixturenames:
        if name.endswith("_config") and name != "app_config":
            request.getfixturevalue(name)
    app = build_app(app_config)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    app.extensions["optin.mail_backend"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def newsletter(app: Flask) -> dict[str, Any]:
    """The ``newsletter`` list with German and English consent texts (version 1)."""
    with app.app_context():
        mailing_list = lists.create_list(
            "newsletter", "Example Newsletter", default_locale="de",
            redirect_urls=["https://www.example.com/danke"],
            origins=["https://www.example.com"],
        )
        for locale, text in lists.DEMO_TEXTS.items():
            lists.add_consent_text(mailing_list, locale, text)
        return {"slug": mailing_list.slug, "id": mailing_list.id}


# --- helpers ---------------------------------------------------------------------------


def deliver(app: Flask) -> int:
    """Run the worker until the outbox has nothing due."""
    return Worker(app).drain()


def retention_at(app: Flask, runner: FlaskCliRunner, moment: datetime | str,
                 *args: str) -> Any:
    """``optin retention run`` as if it ran at ``moment``, a future time the command refuses
    without ``--dry-run`` (it would destroy proof early): the dates retention decides by
    (each subscription's ``retain_until``, each outbox row's ``created_at``) move back by
    the time until ``moment``, the command runs ``--now`` the time they moved from (in the
    past when it runs: the same decisions, to the second), and the dates move forward again."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    reference = utcnow()
    shift = max(moment - reference, timedelta(0))
    sub, row = Subscription.__table__, OutboxItem.__table__

    def move(by: timedelta, ids: tuple[list[int], list[int]] | None = None) -> Any:
        with app.app_context():
            subs = db.session.execute(sa.select(sub.c.id, sub.c.retain_until, sub.c.updated_at).where(
                sub.c.retain_until.is_not(None))).all()
            rows = db.session.execute(sa.select(row.c.id, row.c.created_at)).all()
            if ids is not None:
                subs = [s for s in subs if s.id in set(ids[0])]
                rows = [r for r in rows if r.id in set(ids[1])]
            for s in subs:
                db.session.execute(sub.update().where(sub.c.id == s.id).values(
                    retain_until=s.retain_until + by, updated_at=s.updated_at))
            for r in rows:
                db.session.execute(row.update().where(row.c.id == r.id).values(
                    created_at=r.created_at + by))
            db.session.commit()
        return [s.id for s in subs], [r.id for r in rows]

    if not shift:
        return runner.invoke(args=["retention", "run", "--now", moment.isoformat(), *args])
    moved = move(-shift)
    try:
        return runner.invoke(args=["retention", "run", "--now", reference.isoformat(), *args])
    finally:
        move(shift, moved)


#: The longest window of the rate limits the tests set (``N/minute``).
LIMIT_WINDOW_SECONDS = 60


@pytest.fixture
def limit_window() -> Iterator[None]:
    """Run the test from the start of a rate-limit window, for tests that count requests up
    to a ``memory://`` limit and expect the next one refused.

    The in-process limiter (sliding-window-counter) counts in windows aligned to the epoch
    and weighs the last window's hits by the part of it still in reach: three hits of
    ``3/minute`` just before a minute ends count as 2.99 just after it, floored to 2, so
    a fourth got through whenever a loaded machine took the test across a minute's end.
    The clock moves forward to the next window's start and runs on from there; the test
    then has the whole window, and what it asserts is unchanged."""
    start = (math.floor(time.time() / LIMIT_WINDOW_SECONDS) + 1) * LIMIT_WINDOW_SECONDS
    with time_machine.travel(start + 0.001, tick=True):
        yield


def answered_under_lock(app: Flask, subscription_id: int, ask: Callable[[], Any]) -> tuple[bool, Any]:
    """Run ``ask`` in a thread while another connection holds the subscription's row lock,
    as a worker delivering to it does (PostgreSQL): whether it was answered before the
    lock went (30 s: a bound for a hang, not a speed check), and its answer."""
    with app.app_context():
        engine = db.engine
    answers: list[Any] = []
    with engine.connect() as holder:
        holder.execute(sa.text("SELECT id FROM subscription WHERE id = :id FOR UPDATE"),
                       {"id": subscription_id})
        asking = threading.Thread(target=lambda: answers.append(ask()))
        asking.start()
        asking.join(30)
        under_lock = not asking.is_alive()
        holder.rollback()
    asking.join()
    return under_lock, answers[0]


def signup(client: FlaskClient, address: str, **extra: Any) -> Any:
    body = {"email": address, "list": "newsletter", "consent_text_version": 1, **extra}
    return client.post("/v1/subscriptions", json=body,
                       headers={"User-Agent": "Mozilla/5.0 (signup test)"})


LINK = re.compile(r"http://newsletter\.test/(confirm|unsubscribe)/([A-Za-z0-9_.\-]+)")


def links(message: EmailMessage) -> dict[str, str]:
    """``{"confirm": path, "unsubscribe": path}`` found in a mail's text part."""
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    found: dict[str, str] = {}
    for kind, token in LINK.findall(body.get_content()):
        found.setdefault(kind, f"/{kind}/{token}")
    return found


@pytest.fixture
def signed_up(app: Flask, client: FlaskClient, newsletter: dict, mailbox: Mailbox):
    """Sign ``address`` up, deliver the confirmation mail, return its confirm path."""

    def _signed_up(address: str = "anna@example.org", **extra: Any) -> str:
        assert signup(client, address, **extra).status_code == 202
        deliver(app)
        return links(mailbox.to(address)[-1])["confirm"]

    return _signed_up


@pytest.fixture
def confirmed(app: Flask, client: FlaskClient, signed_up, mailbox: Mailbox):
    """A confirmed subscriber; returns the unsubscribe path from the welcome mail."""

    def _confirmed(address: str = "anna@example.org", **extra: Any) -> str:
        path = signed_up(address, **extra)
        assert client.post(path, environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 303
        deliver(app)
        return links(mailbox.to(address)[-1])["unsubscribe"]

    return _confirmed


# --- a fake ActiveCampaign ---------------------------------------------------------------


@pytest.fixture
def fake_ac() -> Iterator[FakeActiveCampaign]:
    """A fresh fake ActiveCampaign per test (its rate-limit window included)."""
    with FakeActiveCampaign(lists={1: "Newsletter", 2: "Product news"}) as server:
        yield server


def with_fake_ac(config: dict[str, str], fake: FakeActiveCampaign) -> dict[str, str]:
    """``config`` with ActiveCampaign sync live against ``fake`` (not dry-run)."""
    config.update(OPTIN_AC_URL=fake.url, OPTIN_AC_API_KEY=fake.api_key)
    return config


@pytest.fixture
def ac_config(app_config: dict[str, str], fake_ac: FakeActiveCampaign) -> dict[str, str]:
    """``app_config`` pointing at ``fake_ac`` (``app`` applies it, wherever it is listed)."""
    return with_fake_ac(app_config, fake_ac)


@pytest.fixture
def ac_app(app: Flask, ac_config: dict[str, str]) -> Flask:
    """The app with ActiveCampaign sync live against ``fake_ac``."""
    return app


@pytest.fixture
def ac_newsletter(ac_app: Flask, newsletter: dict[str, Any]) -> dict[str, Any]:
    """``newsletter`` mapped to ActiveCampaign list 1, with sync live against ``fake_ac``."""
    from optin.models import MailingList

    with ac_app.app_context():
        db.session.get(MailingList, newsletter["id"]).ac_list_id = 1
        db.session.commit()
    return {**newsletter, "ac_list_id": 1}


# --- a database that fails at COMMIT ------------------------------------------------------


class FailingCommits:
    """A ``before_commit`` listener that fails COMMITs as a database cut between a
    transaction's writes and its COMMIT does: the next ``n`` of them, counted only once
    ``when()`` holds (e.g. once the SMTP server took a mail: the delivery's own COMMIT)."""

    def __init__(self, n: int = 1, when: Callable[[], object] = lambda: True) -> None:
        self.left = n
        self.when = when

    @property
    def failed(self) -> bool:
        return self.left == 0

    def __call__(self, session: Any) -> None:
        if self.left and self.when():
            self.left -= 1
            raise sa.exc.OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))


@contextmanager
def failing_commits(fault: FailingCommits, *, connections: bool = False) -> Iterator[FailingCommits]:
    """Install ``fault`` on every session for the block; with ``connections``, on every
    connection's COMMIT instead (the request intakes commit on a connection of their own,
    not through the session; a session's COMMIT is a connection's too)."""
    target, name = (sa.Engine, "commit") if connections else (Session, "before_commit")
    sa.event.listen(target, name, fault)
    try:
        yield fault
    finally:
        sa.event.remove(target, name, fault)


# --- real worker processes ---------------------------------------------------------------


class WorkerProcesses:
    """``optin worker`` processes with the app's settings (plus overrides), each stopped by
    its pid at the end of the test: SIGTERM, or SIGKILL by :meth:`kill`."""

    def __init__(self, config: dict[str, str]) -> None:
        self.config = config
        self.procs: list[Any] = []

    def start(self, **overrides: str) -> Any:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIN_")}
        env.update(self.config, PYTHONPATH=os.getcwd(), OPTIN_WORKER_POLL_SECONDS="0.1")
        env.update(overrides)
        proc = subprocess.Popen([sys.executable, "-m", "optin", "worker"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def kill(self, proc: Any) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except Exception:  # noqa: BLE001 - a worker that won't stop is killed
                proc.kill()
                proc.wait(5)


@pytest.fixture
def worker_processes(app: Flask, app_config: dict[str, str]) -> Iterator[WorkerProcesses]:
    """Start real ``optin worker`` processes on the test's database."""
    workers = WorkerProcesses(app_config)
    yield workers
    workers.stop_all()
# --- signed ledger checkpoints and a local RFC 3161 authority -----------------------------

#: Ed25519 seeds (base64 of 32 bytes) for OPTIN_LEDGER_SIGNING_KEY: the key, and the next one.
LEDGER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
NEXT_LEDGER_KEY = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="


@pytest.fixture
def signed_config(app_config: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The app signs ledger checkpoints into ``tmp_path / "anchor" / "checkpoints.jsonl"``
    (outside the instance folder, as in production)."""
    app_config["OPTIN_LEDGER_SIGNING_KEY"] = LEDGER_KEY
    app_config["OPTIN_LEDGER_CHECKPOINT_FILE"] = str(tmp_path / "anchor" / "checkpoints.jsonl")
    return app_config


_TSA_CONFIG = """
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.crt
certs = $dir/tsa.crt
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
[ tsa_cert ]
extendedKeyUsage = critical,timeStamping
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
"""


@dataclass
class TimeStampAuthority:
    """A local RFC 3161 authority: ``openssl ts -reply`` behind a small HTTP server."""

    dir: Path
    url: str = ""
    requests: int = 0
    refuse: bool = False  # answer HTTP 500 (an outage)

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def cert_file(self) -> Path:
        return self.dir / "tsa.crt"

    def reply(self, query: bytes) -> bytes:
        (self.dir / "query.tsq").write_bytes(query)
        subprocess.run(["openssl", "ts", "-reply", "-config", str(self.dir / "tsa.cnf"),
                        "-queryfile", str(self.dir / "query.tsq"), "-out", str(self.dir / "reply.tsr")],
                       check=True, capture_output=True)
        return (self.dir / "reply.tsr").read_bytes()


@pytest.fixture(scope="session")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TimeStampAuthority]:
    """A CA, a TSA certificate it issued (extended key usage timeStamping), and the
    authority answering time-stamp queries over HTTP on a free port."""
    folder = tmp_path_factory.mktemp("tsa")
    (folder / "tsa.cnf").write_text(_TSA_CONFIG.format(dir=folder))
    (folder / "serial").write_text("01\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-subj", "/CN=optin test TSA CA", "-days", "30")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr",
            "-subj", "/CN=optin test TSA")
    openssl("x509", "-req", "-in", "tsa.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tsa.crt", "-days", "30", "-extfile", "tsa.cnf",
            "-extensions", "tsa_cert")
    authority = TimeStampAuthority(folder)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            query = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            authority.requests += 1
            if authority.refuse:
                self.send_response(500)
                self.end_headers()
                return
            body = authority.reply(query)
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    authority.url = f"http://127.0.0.1:{server.server_address[1]}/tsr"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield authority
    server.shutdown()
    server.server_close()
