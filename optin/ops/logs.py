"""Logging: one handler, JSON or text, every line tagged with its request or outbox row.

``init_app`` installs the handler (``OPTIN_LOG_FORMAT``: ``json`` by default in
production, ``text`` in development) and the request id: taken from an incoming
``X-Request-ID`` when it is a short, plain token, generated otherwise, and echoed
in the answer. The worker tags its lines with the outbox row (``outbox_id``,
``outbox_kind``) through :func:`context`.

No log line carries an address, an IP, a secret or a link's token: call sites log
:func:`pseudonym` (a short keyed hash, the first characters of the address hash
kept in the database), and the formatter replaces whatever slips through
(an address quoted in an SMTP error, an IP in a library's message) the same way,
and blanks the configured secrets. The addresses of this machine (loopback,
0.0.0.0, its own interface address) are no one's personal data and stay as they
are: the development server's "Running on http://…" line must be usable.

Colour codes (the development server colours its lines) reach only a terminal:
a log file or a journal gets plain text.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask, Response, current_app, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter
from werkzeug.serving import get_interface_ip

from optin.config import Settings, current_settings
from optin.ops.pseudonyms import keyed_hash

HANDLER_NAME = "optin"
REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy or a load balancer puts there: a UUID, a hex trace id, ``Root=1-…``.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+/-]{0,127}")
PSEUDONYM_LENGTH = 12

_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+")
# Candidates only; a match is replaced only if ipaddress accepts it (times are not IPs).
_H = "[0-9A-Fa-f]{1,4}"
_V4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_IP = re.compile(
    rf"(?<![\w.]){_V4}(?!\w|\.\d)"  # IPv4, also before a :port or at a sentence's end
    rf"|(?<![\w.:])(?:(?:{_H}:){{7}}{_H}|(?:{_H}(?::{_H})*)?::(?:(?:{_H}:)*(?:{_V4}|{_H}))?)"
    rf"(?![\w:]|\.\d)"
)

# The signed token in a confirm/unsubscribe link is as good as the click: never logged.
_LINK_TOKEN = re.compile(r"(/(?:confirm|unsubscribe)/)[^/\s\"'?#]+")

# ANSI control sequences (CSI ... final byte), e.g. "\x1b[1m", "\x1b[31m", "\x1b[0m".
_ANSI = re.compile(r"\x1b\[[0-9;?]*[@-~]")

_context: ContextVar[dict[str, Any] | None] = ContextVar("optin_log_context", default=None)


def pseudonym(value: str | None, key: bytes | None = None) -> str:
    """A short keyed hash of an address or an IP, for logs: the same value gives the same
    pseudonym, and an address's is the start of its ``email_hash`` (search the database
    with it). ``key`` defaults to the running app's OPTIN_HASH_KEY."""
    if not value:
        return "-"
    if key is None:
        key = current_settings().hash_key
    return keyed_hash(value, key)[:PSEUDONYM_LENGTH]


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every line logged inside the block (the worker's outbox row)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def scrub_path(path: str) -> str:
    """``/confirm/<token>/resend`` -> ``/confirm/[token]/resend`` (gunicorn's access log uses it)."""
    return _LINK_TOKEN.sub(r"\1[token]", path)


def request_id() -> str | None:
    """The current request's id, if there is a request."""
    return g.get("request_id") if has_request_context() else None


@cache
def machine_addresses() -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """This host's own interface addresses: the ones the development server prints
    for ``--host 0.0.0.0`` (found the same way, without sending a packet)."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            found.add(ipaddress.ip_address(get_interface_ip(family).partition("%")[0]))
        except (OSError, ValueError):
            continue
    return frozenset(found)


def is_machine_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, "any" (0.0.0.0, ::) or one of this host's own addresses: not personal data."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified or ip in machine_addresses()


class Scrubber:
    """Blanks secrets and replaces addresses and IPs with their pseudonyms in log text;
    strips colour codes unless ``colour`` (the log goes to a terminal)."""

    def __init__(self, key: bytes, secrets: Iterable[str | None] = (), *,
                 colour: bool = False) -> None:
        self.key = key
        self.colour = colour
        # Longest first, so a secret containing another is blanked whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        if not self.colour:
            text = _ANSI.sub("", text)
        text = scrub_path(text)
        text = _EMAIL.sub(self._address, text)
        return _IP.sub(self._ip, text)

    def _address(self, match: re.Match[str]) -> str:
        return f"<address {pseudonym(unquote(match.group()), self.key)}>"

    def _ip(self, match: re.Match[str]) -> str:
        try:
            ip = ipaddress.ip_address(match.group())
        except ValueError:
            return match.group()
        if is_machine_address(ip):
            return match.group()
        return f"<ip {pseudonym(match.group(), self.key)}>"


class ContextFilter(logging.Filter):
    """Puts ``request_id`` (or the worker's context) on the record, for both formats."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id()
        if rid is not None:
            record.request_id = rid
        for name, value in (_context.get() or {}).items():
            setattr(record, name, value)
        return True


_CONTEXT_FIELDS = ("request_id", "outbox_id", "outbox_kind", "job")


class JsonLogFormatter(JsonFormatter):
    """One JSON object a line; every string value scrubbed."""

    def __init__(self, scrub: Scrubber) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s", timestamp="time",
                         rename_fields={"levelname": "level", "name": "logger"},
                         json_ensure_ascii=False)
        self.scrub = scrub

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {k: self._clean(v) for k, v in log_data.items()}

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value


class TextLogFormatter(logging.Formatter):
    """``time level logger [request_id=…]: message``, scrubbed, for people at a terminal."""

    def __init__(self, scrub: Scrubber) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        fields = [f"{n}={getattr(record, n)}" for n in _CONTEXT_FIELDS if hasattr(record, n)]
        record.context = f" [{' '.join(fields)}]" if fields else ""
        return self.scrub(super().format(record))


def settings_secrets(settings: Settings) -> list[str | None]:
    """Every configured secret a log line must never show."""
    mail_password = urlsplit(settings.mail_url).password
    return [settings.secret_key, settings.ac_api_key, settings.ac_webhook_secret,
            mail_password, unquote(mail_password) if mail_password else None,
            settings.ledger_signing_key, *settings.admin_tokens]


def scrubber(settings: Settings, *, colour: bool = False) -> Scrubber:
    """The scrubber for these settings' secrets and hash key (also gunicorn's, see
    gunicorn.conf.py, so its access and error lines follow the same rule)."""
    return Scrubber(settings.hash_key, settings_secrets(settings), colour=colour)


class ScrubFilter(logging.Filter):
    """Scrubs the finished message of every record that passes (for loggers optin does
    not format itself: gunicorn's error log prints ``Invalid request from ip=…``)."""

    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self.scrub = scrub

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.scrub(record.getMessage()), None
        return True


def handler(settings: Settings, stream: Any = None) -> logging.Handler:
    """The handler ``init_app`` installs (a new stream for tests, stderr otherwise)."""
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    scrub = scrubber(settings, colour=bool(isatty and isatty()))
    out = logging.StreamHandler(stream)
    out.name = HANDLER_NAME
    out.addFilter(ContextFilter())
    out.setFormatter(JsonLogFormatter(scrub) if settings.log_format == "json"
                     else TextLogFormatter(scrub))
    return out


def configure(settings: Settings) -> logging.Handler:
    """Install (or replace) optin's handler on the root logger; other handlers stay."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == HANDLER_NAME]:
        root.removeHandler(old)
    new = handler(settings)
    root.addHandler(new)
    logging.getLogger("optin").setLevel(settings.log_level)
    return new


_SCRUBBER = "optin.ops.logs.scrubber"


def _assign_request_id() -> None:
    """The client's X-Request-ID if it is a plain id, else a new one.

    An id that the scrubber would change (it holds an address, an IP or a configured
    secret) is refused: logged as is it would leak, and scrubbed in the app's lines only it
    would no longer match gunicorn's access log.
    """
    given = request.headers.get(REQUEST_ID_HEADER, "")
    plain = (_SANE_REQUEST_ID.fullmatch(given) is not None
             and current_app.extensions[_SCRUBBER](given) == given)
    g.request_id = given if plain else uuid.uuid4().hex


def _echo_request_id(response: Response) -> Response:
    rid = request_id()
    if rid:
        response.headers[REQUEST_ID_HEADER] = rid
    return response


def init_app(app: Flask, settings: Settings) -> None:
    """Configure logging once for the process and give every request its id."""
    configure(settings)
    app.extensions[_SCRUBBER] = scrubber(settings)
    app.before_request_funcs.setdefault(None, []).insert(0, _assign_request_id)
    app.after_request(_echo_request_id)


__all__ = ["ScrubFilter", "context", "handler", "init_app", "pseudonym", "request_id",
           "scrub_path", "scrubber"]
