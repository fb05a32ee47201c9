"""Development only: a demo landing page at ``/`` and a viewer for the mail folder.

A newcomer runs ``optin serve``, signs up on ``/`` with the embedded form,
opens the confirmation mail at ``/dev/mail`` and clicks through confirm and
unsubscribe, all in the browser. ``web.init_app`` registers this blueprint
only when ``OPTIN_ENV`` is development: in production ``/`` is a 404 and no
mail can be read over HTTP.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, make_response, render_template, request

from optin.config import current_settings
from optin.consent import lists
from optin.delivery import mailbox
from optin.ops.pages import pick_locale
from optin.web import embed

bp = Blueprint("demo", __name__)

# The landing page runs the embed script and its fetch() against this origin, and
# the snippet hides its honeypot with a style attribute (as on any landing page).
DEMO_CSP = (
    "default-src 'none'; style-src 'self'; style-src-attr 'unsafe-inline'; script-src 'self'; "
    "connect-src 'self'; img-src 'self' https:; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
# A mail's HTML part as a mail client shows it: inline styles, never scripts.
MAIL_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
MAIL_NAME = re.compile(r"[A-Za-z0-9_.@+=\-]+\.eml")


def mail_dir() -> Path | None:
    """The folder the file backend writes to, or None when mail goes out by SMTP."""
    return mailbox.folder_of(current_app.extensions["optin.mail_backend"])


def _mail(name: str) -> mailbox.MailFile:
    folder = mail_dir()
    if folder is None or not MAIL_NAME.fullmatch(name) or not (folder / name).is_file():
        abort(404)
    return mailbox.read(folder / name)


@bp.get("/")
def landing() -> Response:
    """A landing page with the ``newsletter`` list's embedded form (created if missing)."""
    mailing_list = lists.ensure_demo_list()
    locale = pick_locale(request.args.get("lang"), mailing_list)
    html = render_template(
        "demo/landing.html",
        locale=locale,
        brand=current_app.extensions["optin.brand"],
        list=mailing_list,
        form=embed.snippet(mailing_list, locale, request.host_url),
        mail_dir=mail_dir(),
    )
    response = make_response(html)
    response.headers["Content-Security-Policy"] = DEMO_CSP
    response.headers["Content-Language"] = locale
    return response


@bp.get("/dev/mail")
def mail_index() -> Response:
    """Every mail the file backend wrote, newest first, with its links."""
    folder = mail_dir()
    mails = list(itertools.islice(mailbox.newest_first(folder), 100)) if folder else []
    locale = pick_locale(request.args.get("lang"))
    response = make_response(render_template(
        "demo/mail.html", locale=locale, brand=current_app.extensions["optin.brand"],
        list=None, mails=mails, mail_dir=folder, base_url=current_settings().base_url,
    ))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/dev/mail/<name>/html")
def mail_html(name: str) -> Response:
    """The HTML part, shown as a mail client would (its links work as in the mail)."""
    html = _mail(name).part("html")
    if html is None:
        abort(404)
    response = make_response(html)
    response.headers["Content-Security-Policy"] = MAIL_CSP
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/dev/mail/<name>/text")
def mail_text(name: str) -> Response:
    """The plain-text part, as it is."""
    response = make_response(_mail(name).as_text())
    response.mimetype = "text/plain"
    response.headers["Cache-Control"] = "no-store"
    return response
