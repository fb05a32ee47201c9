"""Render ``templates/email/`` and send mail through a file or SMTP backend.

Built on the standard library (``email.message.EmailMessage`` and
``smtplib``): its header handling refuses CR/LF in header values, encodes
UTF-8 names per RFC 2047, and is all a transactional mailer needs.
"""

from __future__ import annotations

import contextlib
import email.policy
import hashlib
import logging
import re
import smtplib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from .config import TEMPLATE_DIR

log = logging.getLogger(__name__)

FALLBACK_LOCALE = "en"


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, remembering the class it builds per header name.

    ``HeaderRegistry`` creates a new class with ``type()`` for every header of every
    message; the classes are identical each time, and building them was a third of
    the cost of building a confirmation mail. Hand-written because the standard
    library offers no switch for it; the parsing and folding stay the library's.
    """

    def __init__(self) -> None:
        super().__init__()
        self._built: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = super().__getitem__(name)
        return built


#: ``email.policy.default`` (RFC 5322, UTF-8 names encoded per RFC 2047, CR/LF refused).
POLICY = email.policy.default.clone(header_factory=_HeaderClasses())
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean_header_text(value: str | None) -> str:
    """User-supplied text bound for a header: no control characters, ever."""
    return _CONTROL.sub(" ", value or "").strip()


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    template: str  # "<name>.<locale>"
    template_sha256: str  # of the three template sources: the template's version


class MailTemplates:
    """The mail templates, looked up in an operator's folder first, then ours."""

    def __init__(self, override_dir: Path | None = None) -> None:
        dirs = [str(override_dir / "email")] if override_dir else []
        dirs.append(str(TEMPLATE_DIR / "email"))
        self.env = Environment(
            loader=FileSystemLoader(dirs),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

        # (name, locale) -> (locale found, template version, up-to-date checks). Listing the
        # folders and hashing the sources on every mail was a fifth of a mail's cost; the
        # loader's own up-to-date checks (file mtimes) tell when an edit needs a new look.
        self._versions: dict[tuple[str, str], tuple[str, str, list[Callable[[], bool]]]] = {}

    def _locale(self, name: str, locale: str) -> str:
        for candidate in (locale, FALLBACK_LOCALE):
            if f"{name}.{candidate}.txt" in self.env.list_templates():
                return candidate
        raise LookupError(f"no mail template {name!r}")

    def _version(self, name: str, locale: str) -> tuple[str, str]:
        """The locale to use and the SHA-256 of its three template sources."""
        known = self._versions.get((name, locale))
        if known is not None and all(check() for check in known[2]):
            return known[0], known[1]
        found = self._locale(name, locale)
        digest = hashlib.sha256()
        checks: list[Callable[[], bool]] = []
        for part in ("subject.txt", "txt", "html"):
            source, _, uptodate = self.env.loader.get_source(self.env, f"{name}.{found}.{part}")
            digest.update(source.encode())
            checks.append(uptodate or (lambda: False))
        self._versions[(name, locale)] = (found, digest.hexdigest(), checks)
        return found, digest.hexdigest()

    def render(self, name: str, locale: str, context: dict[str, Any]) -> RenderedMail:
        locale, version = self._version(name, locale)
        parts = {
            part: self.env.get_template(f"{name}.{locale}.{part}").render(context)
            for part in ("subject.txt", "txt", "html")
        }
        return RenderedMail(
            subject=clean_header_text(parts["subject.txt"]),
            text=parts["txt"],
            html=parts["html"],
            template=f"{name}.{locale}",
            template_sha256=version,
        )


def build_message(
    mail: RenderedMail,
    *,
    to_email: str,
    to_name: str | None,
    sender: str,
    reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A multipart/alternative message with Message-ID and Date set."""
    msg = EmailMessage(policy=POLICY)
    domain = sender.rpartition("@")[2] or "localhost"
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["Date"] = formatdate(usegmt=True)
    msg["From"] = sender
    local, _, to_domain = to_email.rpartition("@")
    msg["To"] = Address(display_name=clean_header_text(to_name), username=local, domain=to_domain)
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = mail.subject
    msg["Auto-Submitted"] = "auto-generated"
    for key, value in (headers or {}).items():
        msg[key] = clean_header_text(value)
    msg.set_content(mail.text)
    msg.add_alternative(mail.html, subtype="html")
    return msg


class Backend(Protocol):
    def send(self, message: EmailMessage) -> None: ...

    def close(self) -> None: ...


class FileBackend:
    """One ``.eml`` per message in a folder: the development default."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        msgid = str(message["Message-ID"]).strip("<>").replace("/", "_")
        path = self.directory / f"{_sortable_now()}-{msgid}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(message))
        tmp.rename(path)  # readers never see half a mail

    def close(self) -> None:
        pass


def _sortable_now() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")


class SMTPBackend:
    """SMTP with a kept-open connection (reconnects when the server dropped it)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        implicit_tls: bool = False,
        starttls: bool = False,
        timeout: float = 30.0,
        cafile: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.cafile = cafile
        self.username, self._password = username, password
        self.implicit_tls, self.starttls, self.timeout = implicit_tls, starttls, timeout
        self._conn: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the password
        return f"SMTPBackend({self.host}:{self.port}, tls={self.implicit_tls or self.starttls})"

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context(cafile=self.cafile)
        if self.implicit_tls:
            conn: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=context
            )
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.starttls:
                conn.starttls(context=context)
        if self.username:
            conn.login(self.username, self._password or "")
        return conn

    def send(self, message: EmailMessage) -> None:
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = self._connect()
                try:
                    self._conn.send_message(message)
                    return
                except smtplib.SMTPServerDisconnected:
                    self._conn = None
                    if attempt == 2:
                        raise
                except (smtplib.SMTPException, OSError):
                    self._drop()
                    raise

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._conn.quit()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def backend_from_url(url: str) -> Backend:
    """``file:///dir``, ``smtp://user:pass@host:port?starttls=1`` or ``smtps://…``.

    Query options: ``starttls=1``, ``timeout=SECONDS``, ``cafile=PATH`` (trust a
    private CA). Certificates are always verified.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FileBackend(Path(unquote(parts.path)))
    query = parse_qs(parts.query)
    implicit = parts.scheme == "smtps"
    return SMTPBackend(
        parts.hostname or "localhost",
        parts.port or (465 if implicit else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=implicit,
        starttls=query.get("starttls", ["0"])[0] in {"1", "true", "yes"},
        timeout=float(query.get("timeout", ["30"])[0]),
        cafile=query.get("cafile", [None])[0],  # a private CA's certificate, if any
    )
