"""Logs: JSON lines with a request id, and never an address, an IP or a secret."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from flask.testing import FlaskClient
from werkzeug.serving import get_interface_ip

from optin.config import Settings
from optin.extensions import db
from optin.models import MailingList
from optin.ops import logs

from ..conftest import ADMIN_TOKEN, Mailbox, deliver, free_port, links, with_fake_ac

SMTP_USER, SMTP_PASSWORD = "mailer", "smtp-pass-5e8d1c9a7b"
WEBHOOK_SECRET = "webhook-secret-0123456789"
IP = "198.51.100.23"
ADDRESSES = ("anna.logtest@example.org", "bert.logtest@example.org", "refused.logtest@example.org")


class RefusingMailbox(Mailbox):
    """Takes mail, but refuses one recipient the way real servers do: quoting the address."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("refused."):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def auth_smtp() -> Iterator[tuple[int, RefusingMailbox]]:
    """A real SMTP server that requires a login (so OPTIN_MAIL_URL carries a password)."""
    mailbox = RefusingMailbox()
    port = free_port()

    def authenticate(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
        ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok)

    controller = Controller(mailbox, hostname="127.0.0.1", port=port, authenticator=authenticate,
                            auth_require_tls=False)
    controller.start()
    yield port, mailbox
    controller.stop()


@pytest.fixture
def app_config(app_config, auth_smtp, fake_ac):
    port, _ = auth_smtp
    app_config.update(OPTIN_MAIL_URL=f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}",
                      OPTIN_LOG_LEVEL="DEBUG", OPTIN_LOG_FORMAT="json")
    return with_fake_ac(app_config, fake_ac)


@contextmanager
def captured() -> Iterator[list[str]]:
    """The lines optin's own handler writes while the block runs."""
    handler = next(h for h in logging.getLogger().handlers if h.name == logs.HANDLER_NAME)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    lines: list[str] = []
    try:
        yield lines
    finally:
        handler.setStream(previous)
        lines.extend(line for line in buffer.getvalue().splitlines() if line)


def _records(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines]  # every line must be JSON


def _info_and_above(records: list[dict]) -> list[dict]:
    return [r for r in records if logging.getLevelName(r["level"]) >= logging.INFO]


def test_logs_are_json_with_request_ids_and_no_personal_data_or_secrets(
        app, client, newsletter, auth_smtp, fake_ac):
    _, mailbox = auth_smtp
    with app.app_context():
        db.session.get(MailingList, newsletter["id"]).ac_list_id = 1
        db.session.commit()
    remote = {"REMOTE_ADDR": IP}
    anna, bert, refused = ADDRESSES

    signups = FlaskClient(app, app.response_class)  # their state machine runs in the worker
    with captured() as web:
        for address in ADDRESSES:
            response = signups.post("/v1/subscriptions", environ_base=remote,
                                   headers={"X-Request-ID": f"req-{address[:4]}"},
                                   json={"email": address, "list": "newsletter",
                                         "consent_text_version": 1})
            assert response.status_code == 202
            assert response.headers["X-Request-ID"] == f"req-{address[:4]}"
    with captured() as worker:
        deliver(app)
    assert {m["To"].addresses[0].addr_spec for m in mailbox.messages} == {anna, bert}

    tokens = []
    with captured() as more_web:
        for address in (anna, bert):
            confirm = links(next(m for m in mailbox.messages if address in str(m["To"])))["confirm"]
            tokens.append(confirm.rsplit("/", 1)[1])
            assert client.post(confirm, environ_base=remote).status_code == 303
    with captured() as more_worker:
        deliver(app)  # welcome mails, ActiveCampaign subscribes
    welcome = [m for m in mailbox.messages if anna in str(m["To"])][-1]
    tokens.append(links(welcome)["unsubscribe"].rsplit("/", 1)[1])
    with captured() as even_more_web:
        assert client.post(links(welcome)["unsubscribe"], environ_base=remote,
                           data={"List-Unsubscribe": "One-Click"}).status_code == 200
        hook = client.post(f"/webhooks/activecampaign?secret={WEBHOOK_SECRET}", environ_base=remote,
                           data={"type": "unsubscribe", "contact[email]": bert, "list": "1"})
        assert hook.status_code == 200
        wrong = client.post("/webhooks/activecampaign?secret=wrong-secret-value",
                            environ_base=remote, data={"type": "unsubscribe"})
        assert wrong.status_code == 403
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert client.get("/v1/contacts", query_string={"email": anna}, headers=auth,
                          environ_base=remote).status_code == 200
        assert client.delete("/v1/contacts", query_string={"email": bert}, headers=auth,
                             environ_base=remote).status_code == 200
        assert client.get("/v1/contacts", query_string={"email": anna}, environ_base=remote,
                          headers={"Authorization": "Bearer not-the-token-0123456789"}
                          ).status_code == 401
    with captured() as last_worker:
        deliver(app)

    request_lines = _records(web + more_web + even_more_web)
    worker_lines = _records(worker + more_worker + last_worker)
    assert fake_ac.requests, "ActiveCampaign was called with the key"

    # During requests: every line at INFO or above names its request.
    for record in _info_and_above(request_lines):
        assert record.get("request_id"), record
    # The signups' own lines come from the worker, naming the request they were made by.
    assert {"req-anna", "req-bert", "req-refu"} <= {r.get("request_id") for r in worker_lines}
    messages = " ".join(r["message"] for r in request_lines)
    assert "signup on list newsletter: new" in " ".join(r["message"] for r in worker_lines)
    assert "confirmed" in messages and "withdrawn: unsubscribed via one_click" in messages
    assert "wrong secret from IP" in messages and "refused GET /v1/contacts" in messages
    # The worker's lines name the outbox row they are about.
    assert _info_and_above(worker_lines)
    for record in _info_and_above(worker_lines):
        if not record["logger"].startswith("optin"):
            continue  # the test SMTP server's own warnings, from its own thread
        assert record.get("outbox_id") and record.get("outbox_kind"), record
    # The refused recipient's SMTP error quoted the address; the log shows its pseudonym.
    refusal = [r for r in worker_lines if "Recipient address rejected" in r["message"]]
    assert refusal and "<address " in refusal[0]["message"]

    everything = "\n".join(web + worker + more_web + more_worker + even_more_web + last_worker)
    info_text = "\n".join(json.dumps(r) for r in _info_and_above(request_lines + worker_lines))
    for address in ADDRESSES:
        assert address not in info_text
        assert address.replace("@", "%40") not in info_text
    assert IP not in info_text
    for secret in (fake_ac.api_key, ADMIN_TOKEN, SMTP_PASSWORD, WEBHOOK_SECRET, *tokens):
        assert secret not in everything


@pytest.mark.parametrize("given", ["abc\r\nX-Injected: 1", "a" * 500, "", "spaces are bad",
                                   "<script>"])
def test_a_bad_request_id_is_replaced(client, given):
    # Straight into the WSGI environ: the test client itself refuses a header with a newline.
    environ = {"HTTP_X_REQUEST_ID": given} if given else {}
    with captured() as lines:
        response = client.get("/healthz", environ_base=environ)
        client.post("/webhooks/activecampaign?secret=wrong-secret-value", environ_base=environ)
    assert lines  # the wrong secret was logged, with the replacement id
    rid = response.headers["X-Request-ID"]
    assert rid != given and len(rid) == 32 and rid.isalnum()
    assert all("X-Injected" not in line and "a" * 100 not in line for line in lines)


def test_a_sane_request_id_is_kept_and_tags_the_lines(client):
    with captured() as lines:
        response = client.post("/webhooks/activecampaign", headers={"X-Request-ID": "edge-7f3a.1"})
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == "edge-7f3a.1"
    # No line is required here, but any line logged belongs to the request.
    assert all(json.loads(line)["request_id"] == "edge-7f3a.1" for line in lines)


def test_scrubber_replaces_addresses_ips_and_secrets():
    scrub = logs.Scrubber(b"k" * 32, ["s3cret-value-123"])
    text = scrub("to Anna.X@Example.org and anna.x%40example.org from 203.0.113.9 and "
                 "2001:db8::1 at 12:30:45, key s3cret-value-123, version 1.2, "
                 "POST /unsubscribe/eyJzIjoxfQ.Zx_9-a failed, GET /confirm/abc.def/resend, "
                 "peer 198.51.100.7:52100, [2001:db8::2]:443, ::ffff:192.0.2.1 and 192.0.2.44.")
    assert "example.org" not in text.lower() and "203.0.113.9" not in text
    assert "2001:db8::1" not in text and "s3cret" not in text
    for ip in ("198.51.100.7", "2001:db8::2", "192.0.2.1", ".0.2.1", "192.0.2.44"):
        assert ip not in text, text
    assert ":52100" in text and "]:443" in text
    assert "12:30:45" in text and "version 1.2" in text  # times and versions are left alone
    assert "/unsubscribe/[token] failed" in text and "/confirm/[token]/resend" in text
    assert "eyJ" not in text and "abc.def" not in text
    # One person, one pseudonym, whatever the case or encoding.
    assert text.count(f"<address {logs.pseudonym('anna.x@example.org', b'k' * 32)}>") == 2


def test_text_format_in_development(tmp_path):
    settings = Settings.from_env({"OPTIN_INSTANCE_PATH": str(tmp_path)}, tmp_path)
    assert settings.development and settings.log_format == "text"
    stream = io.StringIO()
    handler = logs.handler(settings, stream)
    logger = logging.getLogger("optin.test_text_format")
    logger.addHandler(handler)
    try:
        with logs.context(outbox_id=7, outbox_kind="confirm_mail"):
            logger.warning("mail to anna@example.org failed")
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert "WARNING optin.test_text_format [outbox_id=7 outbox_kind=confirm_mail]" in line
    assert "anna@example.org" not in line and "<address " in line


def test_addresses_of_this_machine_stay_readable():
    """The development server's start-up lines name where to point the browser; a client's
    address is still a pseudonym."""
    scrub = logs.Scrubber(b"k" * 32)
    own_v4 = get_interface_ip(socket.AF_INET)  # what werkzeug prints for --host 0.0.0.0
    text = scrub(f" * Running on all addresses (0.0.0.0)\n * Running on http://127.0.0.1:8000\n"
                 f" * Running on http://{own_v4}:8000\n * Running on http://[::1]:8000\n"
                 "::ffff:127.0.0.1 and 127.0.0.1 - - GET / from 203.0.113.9 and 2001:db8::7")
    for kept in ("(0.0.0.0)", "http://127.0.0.1:8000", f"http://{own_v4}:8000", "[::1]:8000",
                 "::ffff:127.0.0.1 and 127.0.0.1 - -"):
        assert kept in text, text
    assert "203.0.113.9" not in text and "2001:db8::7" not in text
    assert text.count("<ip ") == 2


def _log_through(stream: io.StringIO, message: str) -> str:
    settings = Settings.from_env({"OPTIN_ENV": "development", "OPTIN_LOG_FORMAT": "text",
                                  "OPTIN_SECRET_KEY": "s" * 32}, Path("/nonexistent"))
    handler = logs.handler(settings, stream)
    logger = logging.getLogger("optin.test_colour")
    logger.addHandler(handler)
    try:
        logger.warning(message)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_codes_reach_only_a_terminal():
    coloured = "\x1b[31m\x1b[1mWARNING: This is a development server.\x1b[0m \x1b[33mPress CTRL+C\x1b[0m"
    to_file = _log_through(io.StringIO(), coloured)
    assert "\x1b" not in to_file
    assert "WARNING: This is a development server. Press CTRL+C" in to_file
    assert coloured in _log_through(Terminal(), coloured)


def test_gunicorns_own_lines_are_scrubbed_like_the_apps(app):
    """gunicorn's error log says ``Invalid request from ip=…``: the filter gunicorn.conf.py
    puts on its handlers replaces the IP (and any address or secret) like the app's lines."""
    settings = app.extensions["optin.settings"]
    record = logging.LogRecord("gunicorn.error", logging.WARNING, __file__, 1,
                               "Invalid request from ip=%s: %s", ("203.0.113.9", "bad request"),
                               None)
    assert logs.ScrubFilter(logs.scrubber(settings)).filter(record)
    message = record.getMessage()
    assert "203.0.113.9" not in message and message.startswith("Invalid request from ip=<ip ")


@pytest.mark.parametrize("given", ["10.20.30.40", "2001:db8::7", ADMIN_TOKEN])
def test_a_request_id_that_would_leak_is_replaced(client, given):
    """An id that is an IP or a configured secret is not taken (it would be logged)."""
    answer = client.get("/healthz", headers={"X-Request-ID": given})
    assert answer.headers["X-Request-ID"] != given
    assert client.get("/healthz", headers={"X-Request-ID": "trace-1234"}).headers[
        "X-Request-ID"] == "trace-1234"


def test_a_database_error_never_quotes_the_statements_values(app):
    """An error's text reaches the logs and an outbox row's last error: it names the
    statement, never the names, addresses or IPs bound to it (``hide_parameters``)."""
    with app.app_context():
        with pytest.raises(sa.exc.DBAPIError) as caught:
            db.session.execute(sa.text("SELECT * FROM no_such_table WHERE name = :name"),
                               {"name": "Annabel-Secret"})
        db.session.rollback()
    assert "no_such_table" in str(caught.value)
    assert "Annabel-Secret" not in str(caught.value)
