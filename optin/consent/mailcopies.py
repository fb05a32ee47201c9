"""The confirmation mail as it left, kept as proof.

A body hash proves nothing to a reader who cannot see the body, and a mail
rendered again later is not the mail sent (after a withdrawal the name is
gone: "Hello," where the mail said "Hello Anna,"). So the worker keeps the
mail as it was sent, with two kinds of things taken out and marked:

- the link token (whoever holds it can confirm): replaced by :data:`TOKEN` for
  good. Its SHA-256 is recorded, so the copy a recipient kept can be checked:
  put the token back and the part hashes as sent.
- the names the mail quotes (:data:`NAMES`): personal data the proof does not
  need, deleted at withdrawal like everywhere else. The kept parts carry a
  marker per name; each occurrence, as rendered, is kept beside them
  (``mail_copy.names``) until the withdrawal.

A literal ``⟦`` in a mail is kept as :data:`BRACKET`, so markers are never
ambiguous and putting the values back gives exactly the mail sent.

With names and token marked, every mail made from one template version with
one list's texts is the same, so each part is stored once by its SHA-256
(``mail_body``) and a copy names its three parts. The ``confirmation_sent``
ledger event records, when the mail leaves, the SHA-256 of each part as sent,
of the copy with the names (``copy.with_names``) and of the copy without them
(``copy.without_names``); the proof shows whichever copy it still has and
checks it against the recorded hash.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import escape
from sqlalchemy import null, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from optin.extensions import db
from optin.models import MailBody, MailCopy

PARTS = ("subject", "text", "html")
TOKEN = "⟦token⟧"  # noqa: S105 (a marker, not a secret)
BRACKET = "⟦⟧"
#: The names a mail may quote, and their markers (deleted at withdrawal).
NAMES = {"first_name": "⟦first_name⟧", "last_name": "⟦last_name⟧"}
_MARKER = re.compile("|".join(re.escape(m) for m in (TOKEN, BRACKET, *NAMES.values())))
_BY_MARKER = {marker: name for name, marker in NAMES.items()}


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Copy:
    """A mail's three parts with token and names marked, and the names as rendered."""

    parts: dict[str, str]  # part -> kept text (markers in place)
    names: dict[str, list[str]]  # part -> each name occurrence, in order
    token_sha256: list[str]

    def with_names(self) -> dict[str, str]:
        return {part: restore(text, self.names.get(part)) for part, text in self.parts.items()}

    def evidence(self) -> dict[str, Any]:
        """What the ledger records about the copy (hashes only, no value)."""
        return {
            "token_sha256": self.token_sha256,
            "with_names": {p: sha256(t) for p, t in self.with_names().items()},
            "without_names": {p: sha256(t) for p, t in self.parts.items()},
            "names_marked": sorted({_BY_MARKER[m] for t in self.parts.values()
                                    for m in _MARKER.findall(t) if m in _BY_MARKER}),
        }


def _name_pattern(value: str) -> str | None:
    """A name as a whole word, its blanks matching any run of blanks (a text mail's
    line wrap may break a name of two words)."""
    words = value.split()
    if not words:
        return None
    return r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"


@functools.lru_cache(maxsize=64)
def _alternatives(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression of named alternatives, compiled once for the parts that share
    them (a mail's subject and text: compiling was a tenth of a mail's cost)."""
    return re.compile("|".join(f"(?P<g{i}>{p})" for i, p in enumerate(patterns)))


def take(parts: dict[str, str], *, tokens: Iterable[str],
         names: dict[str, str | None]) -> Copy:
    """The copy of a rendered mail (``subject``, ``text``, ``html``): ``tokens`` marked
    everywhere, each of ``names`` marked where it occurs (HTML-escaped in the HTML part)."""
    tokens = [t for t in dict.fromkeys(tokens) if t]
    kept: dict[str, str] = {}
    found: dict[str, list[str]] = {}
    for part, text in parts.items():
        alternatives: list[tuple[str, str]] = [(re.escape(t), TOKEN) for t in tokens]
        for name, value in names.items():
            shown = str(escape(value)) if value and part == "html" else value
            pattern = _name_pattern(shown) if shown else None
            if pattern:
                alternatives.append((pattern, NAMES[name]))
        alternatives.append((re.escape("⟦"), BRACKET))
        # Longer alternatives first, so "Anna Maria" wins over "Anna".
        alternatives.sort(key=lambda a: -len(a[0]))
        regex = _alternatives(tuple(p for p, _ in alternatives))
        values: list[str] = []

        def mark(match: re.Match[str], values: list[str] = values,
                 alternatives: list[tuple[str, str]] = alternatives) -> str:
            marker = alternatives[int((match.lastgroup or "g0")[1:])][1]
            if marker in _BY_MARKER:
                values.append(match.group())
            return marker

        kept[part] = regex.sub(mark, text)
        found[part] = values
    copy = Copy(kept, found, [sha256(t) for t in tokens])
    if any(restore(copy.parts[p], found[p]) != _untokened(parts[p], tokens) for p in parts):
        raise ValueError("the copy does not give back the mail")  # a bug: no copy is kept
    return copy


def _untokened(text: str, tokens: list[str]) -> str:
    for token in tokens:
        text = text.replace(token, TOKEN)
    return text


def restore(text: str, names: list[str] | None) -> str:
    """The kept text with each name marker replaced by its value and :data:`BRACKET`
    by ``⟦``; token markers stay. Without values (``None``) the text as it is."""
    values: Iterator[str] | None = iter(names) if names is not None else None

    def put(match: re.Match[str]) -> str:
        marker = match.group()
        if marker == BRACKET:
            return "⟦" if values is not None else marker
        if marker == TOKEN:
            return marker
        if values is None:
            return marker
        return next(values, marker)

    return _MARKER.sub(put, text)


@functools.cache
def _insert_body(dialect: str) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(MailBody.__table__).on_conflict_do_nothing(index_elements=["sha256"])


def keep(copy: Copy, *, subscription_id: int, message_id: str, template: str,
         sent_at: datetime) -> None:
    """Store the copy in the caller's transaction (each part once, whoever sent it first)."""
    hashes = {part: sha256(text) for part, text in copy.parts.items()}
    db.session.execute(_insert_body(db.session.get_bind().dialect.name),
                       [{"sha256": hashes[p], "body": copy.parts[p]} for p in PARTS])
    db.session.execute(MailCopy.__table__.insert(), {
        "subscription_id": subscription_id, "message_id": message_id, "template": template,
        "sent_at": sent_at, "subject_sha256": hashes["subject"], "text_sha256": hashes["text"],
        "html_sha256": hashes["html"], "names": copy.names if any(copy.names.values()) else None,
    })


def keep_many(copies: list[dict[str, Any]]) -> None:
    """:func:`keep` for several mails at once, two statements in all (a group's mails);
    each entry holds :func:`keep`'s arguments, ``copy`` included."""
    if not copies:
        return
    bodies: dict[str, str] = {}
    rows = []
    for entry in copies:
        copy: Copy = entry["copy"]
        hashes = {part: sha256(text) for part, text in copy.parts.items()}
        bodies.update({hashes[p]: copy.parts[p] for p in PARTS})
        rows.append({
            "subscription_id": entry["subscription_id"], "message_id": entry["message_id"],
            "template": entry["template"], "sent_at": entry["sent_at"],
            "subject_sha256": hashes["subject"], "text_sha256": hashes["text"],
            "html_sha256": hashes["html"],
            "names": copy.names if any(copy.names.values()) else None})
    db.session.execute(_insert_body(db.session.get_bind().dialect.name),
                       [{"sha256": h, "body": b} for h, b in bodies.items()])
    db.session.execute(MailCopy.__table__.insert(), rows)


@dataclass(frozen=True)
class Kept:
    """A stored copy as the proof reads it."""

    message_id: str
    parts: dict[str, str | None]  # without names; None if a body is missing
    names: dict[str, list[str]] | None  # None once withdrawn (or never any)

    def shown(self) -> dict[str, str | None]:
        """The parts as the proof shows them: with the names while they are kept."""
        return {p: (restore(t, (self.names or {}).get(p, [])) if self.names is not None else t)
                if t is not None else None for p, t in self.parts.items()}


def of(subscription_id: int) -> dict[str, Kept]:
    """The kept copies of a subscription's mails, by Message-ID."""
    copies = list(db.session.scalars(select(MailCopy).where(
        MailCopy.subscription_id == subscription_id)))
    wanted = {h for c in copies for h in (c.subject_sha256, c.text_sha256, c.html_sha256)}
    bodies: dict[str, str] = {sha: body for sha, body in db.session.execute(
        select(MailBody.sha256, MailBody.body).where(MailBody.sha256.in_(wanted)))}
    return {c.message_id: Kept(c.message_id, {
        "subject": bodies.get(c.subject_sha256), "text": bodies.get(c.text_sha256),
        "html": bodies.get(c.html_sha256)}, c.names) for c in copies}


def forget_names(subscription_ids: list[int]) -> None:
    """Delete the names quoted in these subscriptions' mail copies (withdrawal, erasure),
    in the caller's transaction; the copies without them stay proof."""
    db.session.execute(
        update(MailCopy).where(MailCopy.subscription_id.in_(subscription_ids))
        .values(names=null()), execution_options={"synchronize_session": False})


def minimize(in_batch: Any) -> None:
    """The names of the copies of a minimized batch (``in_batch`` picks them by
    ``mail_copy.subscription_id``); the copies without names stay."""
    table = MailCopy.__table__
    db.session.execute(update(table).where(in_batch(table.c.subscription_id))
                       .values(names=null()))
