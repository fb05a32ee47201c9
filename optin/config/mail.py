"""``OPTIN_MAIL_URL``, parsed: a folder of ``.eml`` files or an SMTP server.

The mailer builds its backend from this parsed form, so a wrong option
(``?timeout=abc``) stops the start with a line naming the variable instead of
failing at the first mail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

SCHEMES = ("smtp", "smtps", "file")
OPTIONS = ("starttls", "timeout", "cafile")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class MailFolder:
    """``file:///dir``: one ``.eml`` per mail in ``directory`` (the development default)."""

    directory: Path


@dataclass(frozen=True)
class SMTPServer:
    """``smtp://user:pass@host:port?starttls=1`` or ``smtps://…`` (implicit TLS).

    Certificates are always verified; ``cafile`` trusts a private CA.
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    implicit_tls: bool = False
    starttls: bool = False
    timeout: float = 30.0
    cafile: str | None = None


MailTransport = MailFolder | SMTPServer


def parse_mail_url(url: str) -> MailTransport:
    """The transport ``url`` names; ValueError says what is wrong (never the URL: it may
    carry the password)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError("must start with smtp://, smtps:// or file://")
    if parts.scheme == "file":
        if not parts.path:
            raise ValueError("file:// must name a folder, e.g. file:///var/lib/optin/mail")
        return MailFolder(Path(unquote(parts.path)))
    options = _options(parts.query)
    implicit = parts.scheme == "smtps"
    return SMTPServer(
        parts.hostname or "localhost",
        _port(parts, implicit),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=implicit,
        starttls=_flag(options.get("starttls", "0")),
        timeout=_seconds(options.get("timeout", "30")),
        cafile=_cafile(options.get("cafile")),
    )


def _options(query: str) -> dict[str, str]:
    parsed = parse_qs(query, keep_blank_values=True)
    for name, values in parsed.items():
        if name not in OPTIONS:
            raise ValueError(f"has an unknown option {name!r} (known: {', '.join(OPTIONS)})")
        if len(values) > 1:
            raise ValueError(f"names the option {name} twice")
    return {name: values[0] for name, values in parsed.items()}


def _port(parts: SplitResult, implicit_tls: bool) -> int:
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    return port or (465 if implicit_tls else 25)


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"option starttls must be 0 or 1, got {raw!r}")
    return value in _TRUE


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"option timeout must be a number of seconds above 0, got {raw!r}")
    return value


def _cafile(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not Path(raw).is_file():
        raise ValueError(f"option cafile must be an existing certificate file, got {raw!r}")
    return raw
