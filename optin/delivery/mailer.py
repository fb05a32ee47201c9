"""Render ``templates/email/`` and send mail through a file or SMTP backend.

Built on the standard library (``email.mime`` and ``smtplib``): it encodes
UTF-8 names and subjects per RFC 2047, refuses a header value that would start
a second header, and is all a transactional mailer needs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import secrets
import smtplib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    meta,
    select_autoescape,
)

from optin.config import TEMPLATE_DIR, MailFolder, MailTransport, parse_mail_url
from optin.ops.dates import local_datetime
from optin.ops.identity import consent_html, mask_address

log = logging.getLogger(__name__)

FALLBACK_LOCALE = "en"

#: UTF-8 bodies as quoted-printable: readable in the raw mail, 7-bit safe for any relay.
UTF8 = Charset("utf-8")
UTF8.body_encoding = QP
#: RFC 5322's limit on a line (998), less room for the header's name.
MAX_HEADER_VALUE = 900
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean_header_text(value: str | None) -> str:
    """User-supplied text bound for a header: no control characters, ever."""
    return _CONTROL.sub(" ", value or "").strip()


PARTS = ("subject.txt", "txt", "html")


class Unsendable(Exception):
    """This mail can never leave as it is: its address needs SMTPUTF8 and the relay does
    not offer it. Retrying cannot help; the message names no address."""


class FastCompat32(Compat32):
    """``compat32``, writing an ASCII header value that fits on its line as it is.

    compat32 wraps every header value in a ``Header`` and runs its folding algorithm,
    even a short ASCII one, which it gives back unchanged: fourteen headers a mail were
    0.8 ms of the worker's CPU per mail. The same bytes without the detour
    (``tests/delivery/test_mailer.py`` compares both); everything else goes the usual way.
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (isinstance(value, str) and value.isascii() and self.max_line_length
                and len(name) + 2 + len(value) <= self.max_line_length
                and _FOLDS_AS_IS.fullmatch(value) is not None):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)  # type: ignore[misc]


#: What ``Header`` gives back unchanged when it fits: printable ASCII, single spaces
#: between words, none at either end (it would fold runs of blanks and line breaks).
_FOLDS_AS_IS = re.compile(r"[!-~]+(?: [!-~]+)*")
FAST_COMPAT32 = FastCompat32()


class SMTPUTF8Policy(FastCompat32):
    """``compat32`` for a mail whose recipient needs SMTPUTF8 (RFC 6531/6532).

    ``smtplib`` sends such a mail with SMTPUTF8 when the relay offers it (and raises
    ``SMTPNotSupportedError`` when it does not), writing it with a clone of the
    message's policy that has ``utf8=True``; ``compat32`` has no such attribute. With
    ``utf8`` set, a header given as non-ASCII text (the To: line) is written as UTF-8,
    as RFC 6532 allows; an address in RFC 2047 encoded words would be no address.
    """

    utf8 = False

    def fold_binary(self, name: str, value: Any) -> bytes:
        if self.utf8 and isinstance(value, str) and not value.isascii():
            return f"{name}: {value}{self.linesep}".encode()
        return super().fold_binary(name, value)


SMTPUTF8 = SMTPUTF8Policy()
#: How smtplib writes it to a relay that offers SMTPUTF8 (typeshed knows no ``utf8`` here).
SMTPUTF8_WRITTEN = SMTPUTF8.clone(utf8=True)  # type: ignore[call-arg]


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    template: str  # "<name>.<locale>"
    template_sha256: str  # of every template source the mail came from: the template's version


@dataclass(frozen=True)
class TemplateVersion:
    """What a mail template ``<name>.<locale>`` is made of, and the hash the proof records."""

    sha256: str
    #: template name -> source, in the order hashed: the three parts, then the
    #: templates they extend, include or import (``base.html``, ``base.txt``).
    sources: dict[str, str]
    uptodate: tuple[Callable[[], bool], ...]


class MailTemplates:
    """The mail templates, looked up in an operator's folder first, then ours."""

    def __init__(self, override_dir: Path | None = None) -> None:
        dirs = [str(override_dir / "email")] if override_dir else []
        dirs.append(str(TEMPLATE_DIR / "email"))
        self.loader = FileSystemLoader(dirs)
        self.env = Environment(
            loader=self.loader,
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self.env.filters["local_datetime"] = local_datetime
        self.env.filters["masked"] = mask_address
        self.env.filters["consent_html"] = consent_html

        # (name, locale) -> (locale found, its version). Listing the folders and hashing
        # the sources on every mail was a fifth of a mail's cost; the loader's own
        # up-to-date checks (file mtimes) tell when an edit needs a new look.
        self._versions: dict[tuple[str, str], tuple[str, TemplateVersion]] = {}

    def _locale(self, name: str, locale: str) -> str:
        for candidate in (locale, FALLBACK_LOCALE):
            if f"{name}.{candidate}.txt" in self.env.list_templates():
                return candidate
        raise LookupError(f"no mail template {name!r}")

    def version(self, template: str) -> TemplateVersion:
        """The sources of ``template`` (``"confirm.de"``) and their SHA-256.

        The hash covers every source that shapes the mail, so a change to a shared
        base changes the version of each mail that extends it. For a template that
        extends nothing it is the hash of its three sources, as it always was.
        Raises ``TemplateNotFound`` when one of the three parts is missing.
        """
        parts = [f"{template}.{part}" for part in PARTS]
        pending = list(parts)
        sources: dict[str, str] = {}
        checks: list[Callable[[], bool]] = []
        while pending:
            name = pending.pop(0)
            if name in sources:
                continue
            try:
                source, _, uptodate = self.loader.get_source(self.env, name)
            except TemplateNotFound:
                if name in parts:
                    raise
                continue  # a fallback or "ignore missing" name that isn't there shapes nothing
            sources[name] = source
            checks.append(uptodate)
            for referenced in meta.find_referenced_templates(self.env.parse(source, name)):
                if referenced is None:
                    raise TemplateError(f"mail template {name!r} names a template by a variable; "
                                        "the recorded template hash could not cover it")
                pending.append(referenced)
        digest = hashlib.sha256()
        for source in sources.values():
            digest.update(source.encode())
        return TemplateVersion(digest.hexdigest(), sources, tuple(checks))

    def _version(self, name: str, locale: str) -> tuple[str, TemplateVersion]:
        """The locale to use and its template version, from the cache while the files are unchanged."""
        known = self._versions.get((name, locale))
        if known is not None and all(check() for check in known[1].uptodate):
            return known
        found = self._locale(name, locale)
        self._versions[(name, locale)] = found, self.version(f"{name}.{found}")
        return self._versions[(name, locale)]

    def render(self, name: str, locale: str, context: dict[str, Any]) -> RenderedMail:
        """The mail ``name`` in ``locale`` (else English). The templates see ``locale``
        as the language of the template found, so a fallback says ``lang="en"``."""
        locale, version = self._version(name, locale)
        context = {**context, "locale": locale}
        parts = {
            part: self.env.get_template(f"{name}.{locale}.{part}").render(context)
            for part in PARTS
        }
        return RenderedMail(
            subject=clean_header_text(parts["subject.txt"]),
            text=parts["txt"],
            html=parts["html"],
            template=f"{name}.{locale}",
            template_sha256=version.sha256,
        )


def build_message(
    mail: RenderedMail,
    *,
    to_email: str,
    to_name: str | None,
    sender: str,
    reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> Message:
    """A multipart/alternative message (text, then HTML) with Message-ID and Date set.

    Built with the standard library's ``email.mime`` classes and its original
    (``compat32``) policy rather than ``EmailMessage``: the modern policy parses
    and re-folds every header through its header registry, which made building a
    mail three times as expensive (3 ms against 1 ms) for the same bytes on the
    wire. Non-ASCII names and subjects are still encoded per RFC 2047 (by
    ``formataddr`` and ``Header``), bodies go out as quoted-printable UTF-8, and
    control characters never reach a header (``clean_header_text``; ``Header``
    also refuses a value that would start a second header).
    """
    # A boundary of our own: the generator would otherwise compile a regular expression
    # per mail to prove its random boundary absent from the text. "=_" cannot occur in
    # quoted-printable bodies, since QP writes every "=" as "=3D".
    international = not to_email.isascii()
    msg = MIMEMultipart("alternative", boundary=f"=_{secrets.token_hex(16)}",
                        policy=SMTPUTF8 if international else FAST_COMPAT32)
    msg["Message-ID"] = make_msgid(domain=_domain(sender))
    msg["Date"] = formatdate(usegmt=True)
    msg["From"] = _address(sender)
    msg["To"] = _recipient(clean_header_text(to_name), to_email)
    if reply_to:
        msg["Reply-To"] = _address(reply_to)
    # typeshed types compat32 headers and charsets as str; it takes Header and Charset.
    msg["Subject"] = _header(mail.subject)  # type: ignore[assignment]
    msg["Auto-Submitted"] = "auto-generated"
    for key, value in (headers or {}).items():
        msg[key] = _unfolded(clean_header_text(value))  # type: ignore[assignment]
    msg.attach(MIMEText(mail.text, "plain", UTF8))  # type: ignore[arg-type]
    msg.attach(MIMEText(mail.html, "html", UTF8))  # type: ignore[arg-type]
    return msg


def _recipient(name: str, address: str) -> str:
    """``Name <addr>``; an address that is not ASCII (SMTPUTF8 only) goes in as it is,
    since ``formataddr`` insists on ASCII; the name is encoded the same way either way."""
    if address.isascii():
        return formataddr((name, address), charset=UTF8)
    return f"{formataddr((name, '@'), charset=UTF8).removesuffix('<@>')}<{address}>" if name else address


@functools.lru_cache(maxsize=256)
def _address(value: str) -> str:
    """``Name <addr>`` or ``addr`` as a header: the name encoded when it is not ASCII (a
    list's sender: the same for every mail, parsed once)."""
    name, addr = parseaddr(clean_header_text(value))
    return formataddr((name, addr), charset=UTF8)


@functools.lru_cache(maxsize=256)
def _domain(sender: str) -> str:
    return parseaddr(sender)[1].rpartition("@")[2] or "localhost"


def _header(value: str) -> str | _EncodedWords:
    """ASCII stays as it is; anything else becomes RFC 2047 encoded words."""
    return value if value.isascii() else _EncodedWords(value)


class _EncodedWords:
    """A non-ASCII header value as ``Header(value, UTF8)`` writes it, encoded once per value
    and line format: a list's subject is the same in every mail, and finding the shortest
    encoding of each line was 0.4 ms of a mail's CPU. Header-like, as :class:`_AsIs`."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __str__(self) -> str:
        return self.value

    def encode(self, linesep: str = "\n", maxlinelen: int | None = None) -> str:
        return _encoded_words(self.value, linesep, maxlinelen)


@functools.lru_cache(maxsize=256)
def _encoded_words(value: str, linesep: str, maxlinelen: int | None) -> str:
    return Header(value, UTF8).encode(linesep=linesep, maxlinelen=maxlinelen)


def _unfolded(value: str) -> str | _EncodedWords | _AsIs:
    """For links (List-Unsubscribe): one line when it fits, else as :func:`_header`."""
    return _AsIs(value) if value.isascii() and len(value) <= MAX_HEADER_VALUE else _header(value)


class _AsIs:
    """An ASCII header value written out unfolded.

    compat32 folds a value that does not fit on the header's first line by moving
    it to a continuation line, so ``List-Unsubscribe: <https://…long link…>``
    would go out as an empty first line and the link below it. Legal, but some
    List-Unsubscribe parsers are strict; one line is what senders use. (The
    policy's folding is all or nothing, hence this small Header-like object.)
    """

    def __init__(self, value: str) -> None:
        self.value = value

    def __str__(self) -> str:
        return self.value

    def encode(self, linesep: str = "\n", maxlinelen: int | None = None) -> str:
        return self.value


class Backend(Protocol):
    def send(self, message: Message) -> None: ...

    def close(self) -> None: ...


class FileBackend:
    """One ``.eml`` per message in a folder: the development default."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, message: Message) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        msgid = str(message["Message-ID"]).strip("<>").replace("/", "_")
        path = self.directory / f"{_sortable_now()}-{msgid}.eml"
        tmp = path.with_suffix(".tmp")
        # A mail for an SMTPUTF8 address is written as such a relay would get it.
        utf8 = SMTPUTF8_WRITTEN if isinstance(message.policy, SMTPUTF8Policy) else None
        tmp.write_bytes(message.as_bytes(policy=utf8))
        tmp.rename(path)  # readers never see half a mail

    def close(self) -> None:
        pass


def _sortable_now() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")


class RelayUnavailable(OSError):
    """The relay could not be reached or would not take a connection (refused, timed out,
    a 4xx/5xx greeting, a failed login): the destination is failing, not this mail."""


class SMTPBackend:
    """SMTP with kept-open connections, one per thread (reconnects when the server dropped one)."""

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
        # One connection per delivering thread: a worker keeps several busy at once.
        self._local = threading.local()
        self._open: set[smtplib.SMTP] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the password
        return f"SMTPBackend({self.host}:{self.port}, tls={self.implicit_tls or self.starttls})"

    def _connect(self) -> smtplib.SMTP:
        conn = self.open()
        try:
            self.secure(conn)
            self.login(conn)
        except BaseException:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                conn.close()
            raise
        return conn

    # The three steps of a connection, public so that ``optin check`` can try and report
    # each one with the real settings.

    def open(self) -> smtplib.SMTP:
        """Connect (with TLS from the first byte for ``smtps://``)."""
        if self.implicit_tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=ssl.create_default_context(cafile=self.cafile))
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    def secure(self, conn: smtplib.SMTP) -> None:
        """STARTTLS with a verified certificate, when the URL asks for it."""
        if self.starttls:
            conn.starttls(context=ssl.create_default_context(cafile=self.cafile))

    def login(self, conn: smtplib.SMTP) -> None:
        """Log in, when the URL names a user."""
        if self.username:
            conn.login(self.username, self._password or "")

    def send(self, message: Message) -> None:
        """Send on this thread's connection (opened on first use, once more when the relay
        dropped it). A relay that cannot be reached, greets with an error or refuses the
        login raises :class:`RelayUnavailable`, the destination's failure; an error about
        this message (a refused recipient) is raised as smtplib raised it."""
        for attempt in (1, 2):
            conn = self._local.conn if hasattr(self._local, "conn") else None
            if conn is None:
                try:
                    conn = self._connect()
                except (smtplib.SMTPException, OSError) as exc:
                    raise RelayUnavailable(f"{type(exc).__name__}: {exc}") from exc
                self._local.conn = conn
                with self._lock:
                    self._open.add(conn)
            try:
                conn.send_message(message)
                return
            except smtplib.SMTPNotSupportedError:
                raise Unsendable("the address needs SMTPUTF8, which the relay does not "
                                 "offer") from None
            except smtplib.SMTPServerDisconnected:
                self._forget(conn)
                if attempt == 2:
                    raise RelayUnavailable("the relay closed the connection") from None
            except (smtplib.SMTPException, OSError):
                self._drop(conn)
                raise

    def _forget(self, conn: smtplib.SMTP) -> None:
        self._local.conn = None
        with self._lock:
            self._open.discard(conn)

    def _drop(self, conn: smtplib.SMTP) -> None:
        self._forget(conn)
        with contextlib.suppress(smtplib.SMTPException, OSError):
            conn.quit()

    def close(self) -> None:
        """Close every thread's connection (at the end of a worker)."""
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                conn.quit()
        self._local = threading.local()


def backend_for(transport: MailTransport) -> Backend:
    """The backend for OPTIN_MAIL_URL as the settings parsed it (``settings.mail``)."""
    if isinstance(transport, MailFolder):
        return FileBackend(transport.directory)
    return SMTPBackend(
        transport.host,
        transport.port,
        username=transport.username,
        password=transport.password,
        implicit_tls=transport.implicit_tls,
        starttls=transport.starttls,
        timeout=transport.timeout,
        cafile=transport.cafile,
    )


def backend_from_url(url: str) -> Backend:
    """``file:///dir``, ``smtp://user:pass@host:port?starttls=1`` or ``smtps://…``.

    Query options: ``starttls=1``, ``timeout=SECONDS``, ``cafile=PATH`` (trust a
    private CA). Certificates are always verified. A malformed URL raises ValueError.
    """
    return backend_for(parse_mail_url(url))
