"""Rendering the pages people see, in their language, with the operator's brand.

Below the web layer so that error answers (``problems``) can render a page
without importing a blueprint.
"""

from __future__ import annotations

from typing import Any, Protocol

from flask import Flask, Response, current_app, has_request_context, make_response, render_template
from flask import request as flask_request
from werkzeug.exceptions import HTTPException

from optin.config import current_settings
from optin.models import LOCALES, Locale
from optin.ops.dates import local_datetime
from optin.ops.identity import consent_html, identity, mask_address

_KNOWN: dict[str | None, Locale] = {locale: locale for locale in LOCALES}


class HasLocale(Protocol):
    """A list, or its snapshot: what a page needs to pick its language."""

    @property
    def default_locale(self) -> str: ...


def pick_locale(preferred: str | None = None, mailing_list: HasLocale | None = None) -> Locale:
    """The language of a page, from the most to the least specific hint.

    1. ``preferred``: the locale the signup was made in (its consent text's),
    2. a ``locale`` parameter of the request (the embedded form sends one, so the
       thank-you and error pages after a form post speak the form's language),
    3. the browser's Accept-Language (``de-AT`` counts as ``de``),
    4. the list's default locale, 5. English.
    """
    hints: list[str | None] = [preferred]
    if has_request_context():
        try:
            hints.append(flask_request.values.get("locale"))
        except HTTPException:  # a body too large to read (the 413 page itself)
            hints.append(flask_request.args.get("locale"))
        hints.append(flask_request.accept_languages.best_match(LOCALES))
    if mailing_list is not None:
        hints.append(mailing_list.default_locale)
    return next((_KNOWN[hint] for hint in hints if hint in _KNOWN), "en")


def render_page(name: str, *, status: int = 200, locale: str | None = None,
                mailing_list: HasLocale | None = None, **context: Any) -> Response:
    """``templates/pages/<name>.<locale>.html`` (an operator's copy first, see OPTIN_TEMPLATE_DIR)."""
    locale = pick_locale(locale, mailing_list)
    html = render_template(
        f"pages/{name}.{locale}.html",
        locale=locale,
        brand=current_app.extensions["optin.brand"],
        list=mailing_list,
        site=identity(mailing_list, current_settings()),
        status=status,
        **context,
    )
    response = make_response(html, status)
    response.headers["Content-Language"] = locale
    response.vary.add("Accept-Language")
    return response


def init_app(app: Flask) -> None:
    """The filters pages share with mails: dates in the reader's language, masked addresses."""
    app.context_processor(lambda: {"site": identity(None, current_settings())})
    app.jinja_env.filters["local_datetime"] = local_datetime
    app.jinja_env.filters["masked"] = mask_address
    app.jinja_env.filters["consent_html"] = consent_html
