"""Errors as RFC 9457 ``application/problem+json`` for machines, pages for people.

API routes (``/v1/…``, ``/webhooks/…``) and clients that ask for JSON get
problem documents; browsers get a friendly page. Neither ever shows a
traceback, and a database outage is a 503 that tells the client to retry.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, g, json, request
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from optin.extensions import db
from optin.ops.pages import render_page

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://optin.invalid/problems/"


def problem(status: int, title: str, detail: str | None = None, *,
            type_: str | None = None, headers: dict[str, str] | None = None,
            **extensions: Any) -> Response:
    body: dict[str, Any] = {"type": type_ or "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extensions)
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


API_PREFIXES = ("/v1/", "/webhooks/", "/openapi")
JSON_TYPES = ("application/json", "application/problem+json")


def wants_json() -> bool:
    """API routes answer JSON unless the client prefers HTML (a browser's form
    post); pages answer HTML unless the client prefers JSON (or a problem document)."""
    if request.is_json:
        return True
    if request.path.startswith(API_PREFIXES):
        return request.accept_mimetypes.best_match([*JSON_TYPES, "text/html"]) != "text/html"
    return request.accept_mimetypes.best_match(["text/html", *JSON_TYPES]) in JSON_TYPES


def error_response(status: int, title: str, detail: str | None = None,
                   errors: dict[str, list[str]] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """The right error for whoever asked: a problem document or a page."""
    if wants_json():
        extra: dict[str, Any] = {"errors": errors} if errors else {}
        return problem(status, title, detail, headers=headers, **extra)
    response = render_page("error", status=status, title=title, detail=detail,
                           errors=errors or {}, back_url=_back_url(request.referrer))
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def set_back_url(url: str | None) -> None:
    """This request's error page's "Back", decided by the view (a signup: the form's page
    on one of the list's sites, or the list's website, see ``lists.back_page``; None: no
    link). Browsers send only the origin as Referer across origins, so the Referer alone
    would lead to the site's home page."""
    g.optin_back_url = url


def _back_url(referrer: str | None) -> str | None:
    """The view's "Back" if it set one; else the Referer, if it is a web page (a
    ``javascript:`` Referer is not): the page that linked here, on pages of no list."""
    if "optin_back_url" in g:
        back: str | None = g.optin_back_url
        return back
    if referrer and urlsplit(referrer).scheme in {"http", "https"} and referrer.isprintable():
        return referrer
    return None


def field_errors(exc: HTTPException) -> dict[str, list[str]] | None:
    """The messages per field of a request flask-smorest refused (webargs puts them under
    the request's part: ``{"query": {"email": [...]}}``), or None."""
    messages = (getattr(exc, "data", None) or {}).get("messages")
    if not isinstance(messages, dict):
        return None
    return {field: found for part in messages.values() if isinstance(part, dict)
            for field, found in part.items()} or None


def _http_error(exc: HTTPException) -> Response:
    headers = {k: v for k, v in exc.get_headers() if k.lower() in {"retry-after", "allow"}}
    return error_response(exc.code or 500, exc.name, exc.description, errors=field_errors(exc),
                          headers=headers)


def _database_down(exc: OperationalError) -> Response:
    log.error("database unavailable: %s", type(exc.orig).__name__ if exc.orig else exc)
    # The session's own connection may be dead too (the intakes write on another one):
    # its rollback then fails, and closes the session all the same; the answer is a 503.
    with contextlib.suppress(SQLAlchemyError):
        db.session.rollback()
    return error_response(503, "Service Unavailable",
                          "The service is briefly unavailable. Nothing was saved; please try "
                          "again in a minute.", headers={"Retry-After": "30"})


def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    log.exception("unhandled error on %s %s", request.method, request.path)
    db.session.rollback()
    return error_response(500, "Internal Server Error",
                          "Something went wrong on our side and nothing was saved. "
                          "Please try again.")


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(OperationalError, _database_down)
    app.register_error_handler(Exception, _unexpected)
