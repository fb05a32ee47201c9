"""The file backend's folder read back as an inbox (development).

``optin mail last`` and the ``/dev/mail`` viewer show what :class:`FileBackend`
wrote. Each ``.eml`` is parsed with the standard library's ``email`` parser, so a
part is read decoded: the quoted-printable soft line breaks that cut a long link
in the raw file (``=`` at a line's end) are gone, and a link reads as the mail
client shows it.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

from optin.delivery.mailer import Backend, FileBackend

#: Links in a text part stand alone on their line or end at white space.
LINK = re.compile(r"https?://[^\s<>\"']+")
#: The headers worth a look when reading a mail at a terminal, in this order.
SHOWN_HEADERS = ("From", "Reply-To", "To", "Subject", "Date", "Message-ID",
                 "List-Unsubscribe", "List-Unsubscribe-Post")
_ACTIONS = ("confirm", "unsubscribe")


@dataclass(frozen=True)
class MailFile:
    """One mail of the folder, parsed."""

    path: Path
    message: EmailMessage

    @property
    def name(self) -> str:
        return self.path.name

    def part(self, subtype: str) -> str | None:
        """The decoded ``text/<subtype>`` part, or None if the mail has none."""
        body = self.message.get_body(preferencelist=(subtype,))
        return body.get_content() if body is not None else None

    @property
    def links(self) -> list[str]:
        """Every link of the text part, decoded, once each, in the order they appear."""
        return list(dict.fromkeys(LINK.findall(self.part("plain") or "")))

    @property
    def action_links(self) -> list[tuple[str, str]]:
        """``(kind, url)`` of its confirm and unsubscribe links (the viewer's buttons)."""
        return [(kind, url) for url in self.links for kind in _ACTIONS if f"/{kind}/" in url]

    def addressed_to(self, address: str) -> bool:
        wanted = address.strip().casefold()
        return any(addr.casefold() == wanted
                   for _, addr in getaddresses([str(v) for v in self.message.get_all("To", [])]))

    def as_text(self) -> str:
        """The shown headers, a blank line, and the text part: the mail as a person reads it."""
        headers = "".join(f"{key}: {self.message[key]}\n" for key in SHOWN_HEADERS
                          if self.message[key])
        return f"{headers}\n{self.part('plain') or ''}"


def folder_of(backend: Backend) -> Path | None:
    """The folder mail is written to, or None when it goes out by SMTP."""
    return backend.directory if isinstance(backend, FileBackend) else None


def read(path: Path) -> MailFile:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return MailFile(path, message)


def newest_first(folder: Path) -> Iterator[MailFile]:
    """The folder's mails, newest first (file names start with the time they were written)."""
    if folder.is_dir():
        for path in sorted(folder.glob("*.eml"), reverse=True):
            yield read(path)


def last(folder: Path, to: str | None = None) -> MailFile | None:
    """The newest mail (to ``to``, when given), or None."""
    return next((mail for mail in newest_first(folder) if to is None or mail.addressed_to(to)),
                None)


__all__ = ["MailFile", "folder_of", "last", "newest_first", "read"]
