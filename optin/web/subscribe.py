"""Signup: ``POST /v1/subscriptions`` from forms and ``fetch()``, and the thank-you page.

The answer is the same for every address (new, pending, confirmed,
withdrawn): 202 for JSON, 303 for a form post. Only invalid input differs.
"""

from __future__ import annotations

import contextlib
from typing import Any

from flask import Response, jsonify, redirect, request, url_for
from flask_smorest import Blueprint
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.datastructures import MultiDict

from .. import lists, subscriptions
from ..config import current_settings
from ..problems import error_response, wants_json
from ..schemas import ProblemSchema, SignupAcceptedSchema, SignupSchema
from .pages import render_page

bp = Blueprint("subscribe", __name__, description="Newsletter signup (public)")

ACCEPTED = {
    "status": "accepted",
    "detail": "If this address can receive mail, a confirmation link is on its way. "
    "The subscription starts once the link is confirmed.",
}
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}


def _form_data(form: MultiDict[str, str]) -> dict[str, Any]:
    """Flat form fields, with ``fields[company]=…`` collected into ``fields``."""
    data: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in form.items():
        if key.startswith("fields[") and key.endswith("]"):
            extra[key[7:-1]] = value
        else:
            data[key] = value
    if extra:
        data["fields"] = extra
    return data


def client() -> subscriptions.Client:
    """IP (after ProxyFix applied OPTIN_TRUSTED_PROXIES) and user agent, for the ledger."""
    return subscriptions.Client(ip=request.remote_addr,
                                user_agent=request.user_agent.string or None)


@bp.route("/v1/subscriptions", methods=["POST"])
@bp.doc(requestBody={"required": True, "content": {
    "application/json": {"schema": SignupSchema},
    "application/x-www-form-urlencoded": {"schema": SignupSchema},
}})
@bp.response(202, SignupAcceptedSchema)
@bp.alt_response(303, description="Form post: see the list's thank-you page")
@bp.alt_response(422, schema=ProblemSchema, description="Invalid input; nothing was stored",
                 content_type="application/problem+json")
@bp.alt_response(415, schema=ProblemSchema, description="Neither JSON nor a form post",
                 content_type="application/problem+json")
def create_subscription() -> Response:
    """Sign an address up for a list; a confirmation mail is sent (double opt-in)."""
    if request.is_json:
        raw = request.get_json(silent=True)
        if not isinstance(raw, dict):
            return error_response(400, "Bad Request", "The body must be a JSON object.")
    elif request.mimetype in FORM_TYPES:
        raw = _form_data(request.form)
    else:
        return error_response(415, "Unsupported Media Type",
                              "Send JSON or an HTML form (application/x-www-form-urlencoded).")
    try:
        data = SignupSchema().load(raw)
    except ValidationError as exc:
        return _invalid(exc.normalized_messages())
    redirect_url = data.pop("redirect_url", None)
    try:
        subscriptions.request_signup(subscriptions.SignupRequest(**data), client(),
                                     current_settings())
    except subscriptions.SignupInvalid as exc:
        return _invalid(exc.errors)

    if wants_json():
        response = jsonify(ACCEPTED)
        response.status_code = 202
        return response
    mailing_list = lists.get_list(data["list"])
    target = lists.allowed_redirect(mailing_list, redirect_url) if mailing_list else None
    return redirect(target or url_for("subscribe.thanks", list=data["list"],
                                      locale=data.get("locale")), 303)


def _invalid(errors: dict[str, Any]) -> Response:
    flat = {k: v if isinstance(v, list) else [str(v)] for k, v in errors.items()}
    return error_response(422, "Unprocessable Content",
                          "Some fields are missing or invalid; nothing was stored.", errors=flat)


@bp.route("/thanks", methods=["GET"])
@bp.doc(hide=True)
def thanks() -> Response:
    """The default page after a form post: check your inbox."""
    mailing_list = lists.get_list(request.args.get("list", ""))
    return render_page("thanks", locale=request.args.get("locale"), mailing_list=mailing_list)


# --- CORS for the embedded form (minimal stand-in) -----------------------------------
# The lead reconciles this with the flask-cors branch (per-list origins); until
# then this covers what embed.js sends: a form-encoded POST, which browsers send
# without a preflight. It only lets the page *read* the answer; the signup
# itself is accepted from anywhere, like a plain form post.


@bp.after_request
def allow_list_origin(response: Response) -> Response:
    """Access-Control-Allow-Origin for an Origin the named list allows (MailingList.origins)."""
    origin = request.headers.get("Origin")
    if not origin or request.endpoint != "subscribe.create_subscription":
        return response
    response.vary.add("Origin")
    body = request.get_json(silent=True) if request.is_json else request.form
    slug = body.get("list") if isinstance(body, dict) else None
    with contextlib.suppress(SQLAlchemyError):  # the answer matters more than its CORS header
        mailing_list = lists.get_list(slug) if isinstance(slug, str) else None
        if mailing_list is not None and origin.lower() in (mailing_list.origins or []):
            response.headers["Access-Control-Allow-Origin"] = origin
    return response
