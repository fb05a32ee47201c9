"""Rendering the pages people see, in their language, with the operator's brand."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, make_response, render_template, request

from ..lists import LOCALES
from ..models import MailingList


def pick_locale(preferred: str | None = None, mailing_list: MailingList | None = None) -> str:
    """The signup's locale, else the browser's (Accept-Language), else the list's default."""
    if preferred in LOCALES:
        return preferred  # type: ignore[return-value]
    best = request.accept_languages.best_match(LOCALES) if request else None
    if best:
        return best
    if mailing_list is not None and mailing_list.default_locale in LOCALES:
        return mailing_list.default_locale
    return "en"


def render_page(name: str, *, status: int = 200, locale: str | None = None,
                mailing_list: MailingList | None = None, **context: Any) -> Response:
    locale = pick_locale(locale, mailing_list)
    html = render_template(
        f"pages/{name}.{locale}.html",
        locale=locale,
        brand=current_app.extensions["optin.brand"],
        list=mailing_list,
        **context,
    )
    response = make_response(html, status)
    response.headers["Content-Language"] = locale
    response.vary.add("Accept-Language")
    return response
