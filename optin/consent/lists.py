"""Mailing lists and their versioned consent texts."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import getaddresses
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app
from sqlalchemy import func, literal, select

from optin.extensions import db
from optin.models import LOCALES, ConsentText, MailingList, Suppression

#: The reason of the suppressions an erasure (Art. 17) leaves on every list.
ERASURE_REASON = "erasure"

DEMO_TEXTS = {
    "de": (
        "Ja, ich möchte den Newsletter per E-Mail erhalten. Meine Einwilligung kann ich "
        "jederzeit über den Abmeldelink in jeder E-Mail widerrufen. Hinweise zum Datenschutz "
        "finden Sie in unserer Datenschutzerklärung."
    ),
    "en": (
        "Yes, I would like to receive the newsletter by email. I can withdraw my consent at "
        "any time with the unsubscribe link in every email. See our privacy policy for how "
        "we handle your data."
    ),
}


class ListError(ValueError):
    """A list or consent text could not be created; the message says why."""


class UnknownList(LookupError):
    """No list with that slug (``args[0]``)."""


def _check_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ListError(f"{what} must be an absolute http(s) URL: {url!r}")
    return url


def _origin(url: str) -> str:
    parts = urlsplit(_check_url(url, "origin"))
    if parts.path not in {"", "/"} or parts.query:
        raise ListError(f"an origin is scheme://host[:port] without a path: {url!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def create_list(
    slug: str,
    name: str,
    *,
    ac_list_id: int | None = None,
    redirect_urls: list[str] | tuple[str, ...] = (),
    origins: list[str] | tuple[str, ...] = (),
    default_locale: str = "de",
    send_welcome: bool = True,
    send_goodbye: bool = False,
    sender: str | None = None,
    reply_to: str | None = None,
) -> MailingList:
    """Create a list (committed). Slugs are lowercase words joined by hyphens."""
    if not is_slug(slug):
        raise ListError(f"slug must be lowercase letters, digits and hyphens: {slug!r}")
    if default_locale not in LOCALES:
        raise ListError(f"locale must be one of {', '.join(LOCALES)}")
    if get_list(slug) is not None:
        raise ListError(f"list {slug!r} exists already")
    mailing_list = MailingList(
        slug=slug,
        name=name,
        ac_list_id=ac_list_id,
        redirect_urls=[_check_url(u, "redirect URL") for u in redirect_urls],
        origins=[_origin(o) for o in origins],
        default_locale=default_locale,
        send_welcome=send_welcome,
        send_goodbye=send_goodbye,
        sender=_mail_address(sender, "sender"),
        reply_to=_mail_address(reply_to, "reply-to"),
    )
    db.session.add(mailing_list)
    db.session.flush()
    # Who asked for erasure is not to be contacted on a list made later either.
    sup = Suppression.__table__
    db.session.execute(sup.insert().from_select(
        ["list_id", "email_hash", "reason", "created_at"],
        select(literal(mailing_list.id), sup.c.email_hash, literal(ERASURE_REASON),
               func.min(sup.c.created_at))
        .where(sup.c.reason == ERASURE_REASON).group_by(sup.c.email_hash)))
    db.session.commit()
    return mailing_list


def _mail_address(value: str | None, what: str) -> str | None:
    """``news@example.com`` or ``Example News <news@example.com>``, or None for the default."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    parsed = getaddresses([value])
    if len(parsed) != 1 or any(c in value for c in "\r\n"):
        raise ListError(f"{what} must be one address like 'News <news@example.com>': {value!r}")
    name, addr = parsed[0]
    local, at, domain = addr.rpartition("@")
    if not at or not local or "." not in domain:
        raise ListError(f"{what} must be one address like 'News <news@example.com>': {value!r}")
    return str(Address(display_name=name, addr_spec=addr))


# What ``update_list`` may change, and how each new value is checked.
_UPDATABLE = {
    "name": lambda v: v,
    "ac_list_id": lambda v: v,
    "redirect_urls": lambda v: [_check_url(u, "redirect URL") for u in v],
    "origins": lambda v: [_origin(o) for o in v],
    "default_locale": lambda v: _locale(v),
    "send_welcome": bool,
    "send_goodbye": bool,
    "sender": lambda v: _mail_address(v, "sender"),
    "reply_to": lambda v: _mail_address(v, "reply-to"),
    "privacy_policy_url": lambda v: _check_url(v, "privacy policy URL") if v else None,
    "controller": lambda v: v.strip() or None,  # who is responsible, for the consent receipt
    "purpose": lambda v: v.strip() or None,
    "website_url": lambda v: _check_url(v, "website URL") if v else None,
    "imprint_url": lambda v: _check_url(v, "imprint URL") if v else None,
    "postal_address": lambda v: _footer_text(v, "postal address", 500),
    "sender_name": lambda v: _footer_text(v, "sender name", 200),
}


def _footer_text(value: str, what: str, limit: int) -> str | None:
    """Text for a footer or a From: name: no control characters but line breaks (an
    address spans lines; ``\\n`` typed on a command line counts as one)."""
    value = value.replace("\\n", "\n").replace("\r\n", "\n").strip()
    if any(ord(c) < 32 and c != "\n" or ord(c) == 127 for c in value):
        raise ListError(f"{what} must not contain control characters")
    if what == "sender name" and "\n" in value:
        raise ListError("sender name must be one line")
    if len(value) > limit:
        raise ListError(f"{what} must be at most {limit} characters")
    return value or None


def _locale(value: str) -> str:
    if value not in LOCALES:
        raise ListError(f"locale must be one of {', '.join(LOCALES)}")
    return value


def update_list(mailing_list: MailingList, **changes: Any) -> MailingList:
    """Change a list's settings (committed); every value is checked before any is set.

    An empty ``sender``/``reply_to`` goes back to the default (OPTIN_MAIL_FROM, none).
    The slug never changes: forms and ActiveCampaign refer to it.
    """
    unknown = set(changes) - set(_UPDATABLE)
    if unknown:
        raise ListError(f"cannot change {', '.join(sorted(unknown))}")
    checked = {key: _UPDATABLE[key](value) for key, value in changes.items()}
    for key, value in checked.items():
        setattr(mailing_list, key, value)
    db.session.commit()
    forget_snapshots()
    return mailing_list


def is_slug(slug: str) -> bool:
    """Lowercase letters, digits and hyphens: what ``create_list`` accepts."""
    return bool(slug) and all(c.isalnum() or c == "-" for c in slug) and slug == slug.lower()


def get_list(slug: str) -> MailingList | None:
    """The list, or None. Whatever cannot be a slug is no list, without asking the
    database (PostgreSQL refuses a NUL in a string with an error, not with no rows)."""
    if not is_slug(slug):
        return None
    return db.session.scalar(select(MailingList).where(MailingList.slug == slug))


def require_list(slug: str) -> MailingList:
    """The list; raises :class:`UnknownList` if there is none (the operator API's 404)."""
    mailing_list = get_list(slug)
    if mailing_list is None:
        raise UnknownList(slug)
    return mailing_list


# --- snapshots for the signup path ----------------------------------------------------
# A signup needs a list's id, locale and redirect/CORS settings and one consent
# text's id and hash. Reading them from the database on every request cost two
# of a signup's round trips, so each process keeps read-only snapshots: a list
# for SNAPSHOT_TTL seconds (an operator's change reaches other processes within
# that time, this one at once), a consent text for good (texts are never edited;
# a new wording is a new version). The cache hangs on the app (``init_app``), so
# two apps (or two test databases) never share it.

SNAPSHOT_TTL = 10.0


@dataclass(frozen=True)
class ListSnapshot:
    """What a signup needs of a list, detached from any session."""

    id: int
    slug: str
    name: str
    default_locale: str
    redirect_urls: tuple[str, ...]
    origins: tuple[str, ...]
    #: The privacy policy in force, recorded with each signup.
    privacy_policy_url: str | None = None
    #: Where "Back" leads when no page of the form is known (:func:`back_page`).
    website_url: str | None = None

    @classmethod
    def of(cls, row: MailingList) -> ListSnapshot:
        return cls(row.id, row.slug, row.name, row.default_locale,
                   tuple(row.redirect_urls or ()), tuple(row.origins or ()),
                   row.privacy_policy_url, row.website_url)


@dataclass(frozen=True)
class TextSnapshot:
    """A consent text version as a signup records it."""

    id: int
    locale: str
    version: int
    sha256: str


class _Snapshots:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lists: dict[str, tuple[float, ListSnapshot]] = {}
        self.texts: dict[tuple[int, str, int], TextSnapshot] = {}


SNAPSHOTS_EXTENSION = "optin.list_snapshots"


def init_app(app: Flask) -> None:
    """Give the app its own, empty snapshot cache."""
    app.extensions[SNAPSHOTS_EXTENSION] = _Snapshots()


def _snapshots() -> _Snapshots:
    cache: _Snapshots = current_app.extensions[SNAPSHOTS_EXTENSION]
    return cache


def forget_snapshots() -> None:
    """Drop this process's snapshots (after a change to a list)."""
    cache = _snapshots()
    with cache.lock:
        cache.lists.clear()


def list_snapshot(slug: str) -> ListSnapshot | None:
    """The list named ``slug`` as of at most SNAPSHOT_TTL seconds ago (unknown: not cached)."""
    cache = _snapshots()
    now = time.monotonic()
    hit = cache.lists.get(slug)
    if hit is not None and now - hit[0] < SNAPSHOT_TTL:
        return hit[1]
    row = get_list(slug)
    if row is None:
        return None
    snap = ListSnapshot.of(row)
    with cache.lock:
        cache.lists[slug] = (now, snap)
    return snap


def text_snapshot(list_id: int, locale: str, version: int) -> TextSnapshot | None:
    """Consent text ``version`` of a list in ``locale`` (found ones are cached for good)."""
    cache = _snapshots()
    key = (list_id, locale, version)
    snap = cache.texts.get(key)
    if snap is not None:
        return snap
    row = db.session.scalar(select(ConsentText).where(
        ConsentText.list_id == list_id, ConsentText.locale == locale,
        ConsentText.version == version))
    if row is None:
        return None
    snap = TextSnapshot(row.id, row.locale, row.version, row.sha256)
    with cache.lock:
        cache.texts[key] = snap
    return snap


def list_by_id(list_id: int) -> ListSnapshot | None:
    """The list with this id as it is now (the worker, for a queued signup)."""
    row = db.session.get(MailingList, list_id)
    return ListSnapshot.of(row) if row is not None else None


def text_by_id(text_id: int) -> TextSnapshot | None:
    """The consent text with this id (texts are never edited)."""
    row = db.session.get(ConsentText, text_id)
    return TextSnapshot(row.id, row.locale, row.version, row.sha256) if row is not None else None


def all_lists() -> list[MailingList]:
    return list(db.session.scalars(select(MailingList).order_by(MailingList.slug)))


def add_consent_text(
    mailing_list: MailingList, locale: str, text: str, privacy_policy_version: str | None = None
) -> ConsentText:
    """Add the next version of the list's consent text for ``locale`` (committed).

    Texts are never edited: a changed wording is a new version, and each
    signup names the version its form showed.
    """
    text = text.strip()
    if locale not in LOCALES:
        raise ListError(f"locale must be one of {', '.join(LOCALES)}")
    if not text:
        raise ListError("consent text is empty")
    latest = db.session.scalar(
        select(func.max(ConsentText.version)).where(
            ConsentText.list_id == mailing_list.id, ConsentText.locale == locale
        )
    )
    consent = ConsentText(
        list_id=mailing_list.id,
        locale=locale,
        version=(latest or 0) + 1,
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        privacy_policy_version=privacy_policy_version,
    )
    db.session.add(consent)
    db.session.commit()
    return consent


def current_text(mailing_list: MailingList, locale: str) -> ConsentText | None:
    """The newest consent text of a list in ``locale``: what a form should show now."""
    return db.session.scalar(
        select(ConsentText)
        .where(ConsentText.list_id == mailing_list.id, ConsentText.locale == locale)
        .order_by(ConsentText.version.desc())
        .limit(1)
    )


def allowed_redirect(mailing_list: MailingList | ListSnapshot, url: str | None) -> str | None:
    """The URL to send a form post to after signup, only if the list allows it exactly."""
    if url:
        return url if url in mailing_list.redirect_urls else None
    return mailing_list.redirect_urls[0] if mailing_list.redirect_urls else None


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lowercased, as browsers send it in ``Origin``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def form_origins(mailing_list: MailingList | ListSnapshot, base_url: str) -> set[str]:
    """The origins whose pages may post signups for this list.

    The service's own origin (its thank-you and error pages, the demo), the
    list's landing-page origins (``--origin``), and the origins of its
    thank-you URLs (``--redirect-url``: a site you send people back to is a
    site whose forms you trust).
    """
    return {origin_of(base_url), *mailing_list.origins,
            *(origin_of(u) for u in mailing_list.redirect_urls)}


def form_page(mailing_list: MailingList | ListSnapshot, url: str | None,
              base_url: str) -> str | None:
    """``url`` (a signup's ``source_url``, a form's page) if it is a page of one of the
    list's form origins, else None: only such a page may be linked as "Back" or "sign up
    again", since anyone can put any URL in a form post."""
    if not url or urlsplit(url).scheme not in {"http", "https"} or not url.isprintable() \
            or any(c.isspace() for c in url):
        return None
    return url if origin_of(url) in form_origins(mailing_list, base_url) else None


def _site_root(url: str) -> bool:
    parts = urlsplit(url)
    return parts.path in {"", "/"} and not parts.query


def back_page(mailing_list: MailingList | ListSnapshot, source_url: str | None,
              referer: str | None, base_url: str) -> str | None:
    """Where "Back" (and "sign up again") leads from a page a form led to.

    The form's own page, ``source_url`` (embed.js sends it; a form without JavaScript
    carries it when the operator filled it in) or the Referer, if it is a page of one
    of the list's form origins (:func:`form_page`); else the list's website; else such
    a page even if it is only a site's root (a browser posting to another site sends
    only the origin as Referer, and a root is no better than the website). Nothing
    else: both values come from whoever sent the request, and "Back" must never lead
    off the list's own sites (no open redirect, no ``javascript:``).
    """
    pages = [page for page in (form_page(mailing_list, source_url, base_url),
                               form_page(mailing_list, referer, base_url)) if page]
    full = next((page for page in pages if not _site_root(page)), None)
    return full or mailing_list.website_url or next(iter(pages), None)


# In development the demo page may be opened as localhost or 127.0.0.1 on any port, and a
# form tried out from a local file sends ``Origin: null``.
DEVELOPMENT_ORIGINS = re.compile(r"(http://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?|null)\Z")


def may_post_from(mailing_list: MailingList | ListSnapshot, origin: str | None, base_url: str, *,
                  development: bool = False) -> bool:
    """Whether a signup for the list with this ``Origin`` header is accepted.

    No header at all is accepted: servers, scripts and old browsers send none,
    and a hostile page cannot make a browser leave it out. ``null`` (a
    sandboxed frame, a local file) and every other origin must be listed.
    In development, loopback origins and local files are accepted too.
    """
    if origin is None:
        return True
    if development and DEVELOPMENT_ORIGINS.match(origin.lower()):
        return True
    return origin.lower() in form_origins(mailing_list, base_url)


def all_origins() -> set[str]:
    """Every list's landing-page origins: what a CORS preflight (which names no list) allows."""
    return {o for origins in db.session.scalars(select(MailingList.origins)) for o in origins or ()}


def ensure_demo_list() -> MailingList:
    """The ``newsletter`` list with a German and an English text, for development."""
    mailing_list = get_list("newsletter") or create_list(
        "newsletter", "Newsletter", default_locale="de"
    )
    for locale, text in DEMO_TEXTS.items():
        if current_text(mailing_list, locale) is None:
            add_consent_text(mailing_list, locale, text)
    return mailing_list
