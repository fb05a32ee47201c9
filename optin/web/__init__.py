"""Blueprints, one per thing a user does, and the headers every answer carries."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request
from flask.sessions import SessionInterface

from optin.extensions import api
from optin.web import demo, health, links, operator, pages, subscribe, webhooks

# No inline script or style, nothing from third parties, never framed.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' https:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith(("/confirm/", "/unsubscribe/", "/v1/")):
        response.headers["Cache-Control"] = "no-store"  # pages and answers with tokens or data
    return response


class NoCookieSessions(SessionInterface):
    """No Flask session: nothing here keeps state in a cookie (links carry signed tokens,
    forms post plain fields, RFC 8058 posts come without cookies). Flask's signed-cookie
    session would build a serializer and read the cookie on every request, a measurable
    part of a signup (bench/inprocess.py); writing to ``flask.session`` raises instead."""

    def open_session(self, app: Flask, request: Any) -> None:
        return None  # Flask then hands out its NullSession

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        return None


def init_app(app: Flask) -> None:
    app.session_interface = NoCookieSessions()
    api.register_blueprint(subscribe.bp)
    api.register_blueprint(health.bp)
    api.register_blueprint(webhooks.bp)
    api.register_blueprint(links.bp)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.register_blueprint(operator.bp)
    api.register_blueprint(pages.bp)
    # The demo landing page and the mail viewer: development only, never in production.
    if app.extensions["optin.settings"].development:
        app.register_blueprint(demo.bp)
    app.after_request(_security_headers)
