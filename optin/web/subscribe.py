"""Signup: ``POST /v1/subscriptions`` from forms and ``fetch()``, and the thank-you page.

The answer is the same for every address (new, pending, confirmed,
withdrawn): 202 for JSON, 303 for a form post. Only invalid input differs.

Which pages may post (``Origin``): a browser names the page's origin on every
POST. A signup is accepted when the header is absent (servers, scripts, old
browsers), or is the service's own origin (OPTIN_BASE_URL), one of the list's
origins (``--origin``), or the origin of one of its thank-you URLs
(``--redirect-url``); otherwise it is refused with 403 and nothing is stored.
Without this, any page on the web could make its visitors' browsers sign up
addresses of its choosing, from as many IPs as it has visitors, past every
per-IP limit. ``fetch()`` may read the answer (CORS) only from the list's
origins; see :func:`cross_origin`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from flask import Response, current_app, jsonify, redirect, request, url_for
from flask_cors.core import get_cors_options, set_cors_headers
from marshmallow import ValidationError, validates
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from optin.config import current_settings
from optin.consent import intake, lists, subscriptions
from optin.consent.addresses import SMTPUTF8_WHEN_OFFERED, InvalidAddress, signup_address
from optin.ops import ratelimits
from optin.ops.pages import render_page
from optin.ops.problems import error_response, set_back_url, wants_json
from optin.ops.requestjson import Blueprint
from optin.schemas import ProblemSchema, SignupAcceptedSchema, SignupSchema, ThanksQuerySchema
from optin.web.pages import negotiated_responses, page_responses

bp = Blueprint("subscribe", __name__, description="Newsletter signup (public)")

ACCEPTED = {
    "status": "accepted",
    "detail": "If this address can receive mail, a confirmation link is on its way. "
    "The subscription starts once the link is confirmed.",
}
SIGNUP_EXAMPLE = {"email": "anna@example.org", "list": "newsletter", "consent_text_version": 1,
                  "locale": "de", "first_name": "Anna",
                  "source_url": "https://www.example.com/newsletter"}
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}


class SignupForm(SignupSchema):
    """The signup as documented, its address checked with the domain's own rule while the
    body is read, so every field's problem is named in one 422 (the domain checks again)."""

    @validates("email")
    def _mailable(self, value: str, **_: object) -> None:
        try:
            signup_address(value, smtputf8=current_settings().smtputf8 == SMTPUTF8_WHEN_OFFERED)
        except InvalidAddress as exc:
            raise ValidationError(str(exc)) from None


# Built once: a marshmallow schema is stateless after construction, and building
# one per request was a measurable part of a signup.
SIGNUP_SCHEMA = SignupForm()


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
    return subscriptions.Client.of(request.remote_addr, request.user_agent.string)


@bp.route("/v1/subscriptions", methods=["POST"])
@bp.doc(requestBody={"required": True, "content": {
    "application/json": {"schema": SignupSchema, "example": SIGNUP_EXAMPLE},
    "application/x-www-form-urlencoded": {"schema": SignupSchema, "example": SIGNUP_EXAMPLE},
}})
@bp.response(202, SignupAcceptedSchema, example=ACCEPTED)
@bp.alt_response(303, description="Form post: see the list's thank-you page")
@bp.alt_response(400, schema=ProblemSchema, description="The JSON body is not an object, not "
                 "JSON, or nested too deeply", content_type="application/problem+json")
# A browser's form post gets these as a page, anyone else as a problem (ops.problems).
@bp.doc(responses=negotiated_responses(
    _422="Invalid input; nothing was stored",
    _415="Neither JSON nor a form post",
    _403="The Origin header is not allowed for this list; nothing was stored",
    _429="Too many signups from this client IP (OPTIN_RATELIMIT_SIGNUP); see Retry-After"))
def create_subscription() -> Response:
    """Sign an address up for a list; a confirmation mail is sent (double opt-in)."""
    # The per-IP limit first, before the body is read, in one round trip (ops.ratelimits).
    limited = ratelimits.check(ratelimits.SIGNUP)
    if limited is not None:
        return limited
    if request.is_json:
        raw = request.get_json()  # a body that is not JSON: 400 saying why (ops.requestjson)
        if not isinstance(raw, dict):
            return error_response(400, "Bad Request", "The body must be a JSON object.")
    elif request.mimetype in FORM_TYPES:
        raw = _form_data(request.form)
        _remember_form_page(raw)
    else:
        return error_response(415, "Unsupported Media Type",
                              "Send JSON or an HTML form (application/x-www-form-urlencoded).")
    try:
        data = SIGNUP_SCHEMA.load(raw)
    except ValidationError as exc:
        return _invalid(exc.normalized_messages())
    redirect_url = data.pop("redirect_url", None)
    referer = request.referrer
    if not data.get("source_url") and referer and _page_url(referer):
        # A form without JavaScript sends no source URL; the browser's Referer names the
        # page (often only its origin: most pages send no more to another site).
        data["source_url"], data["source_url_from"] = referer[:2000], "referer"
    mailing_list = lists.list_snapshot(data["list"])
    settings = current_settings()
    if mailing_list is not None and not lists.may_post_from(
            mailing_list, request.headers.get("Origin"), settings.base_url,
            development=settings.development):
        return error_response(403, "Forbidden", "Signups for this list are not accepted from "
                              "this page (its origin is not one of the list's); nothing was stored.")
    try:
        intake.accept(subscriptions.SignupRequest(**data), client(), settings)
    except subscriptions.SignupInvalid as exc:
        return _invalid(exc.errors)

    if wants_json():
        response = jsonify(ACCEPTED)
        response.status_code = 202
        return response
    target = lists.allowed_redirect(mailing_list, redirect_url) if mailing_list else None
    # Our thank-you page's "Back": the form's page, if it is one of the list's (the page
    # checks again, since anyone can write a query string).
    back = lists.form_page(mailing_list, data.get("source_url"), settings.base_url) \
        if mailing_list else None
    return redirect(target or url_for("subscribe.thanks", list=data["list"],  # type: ignore[return-value]
                                      locale=data.get("locale"), back=back), 303)


def _page_url(value: str) -> bool:
    """An http(s) URL without control characters: a Referer worth recording."""
    return value.startswith(("http://", "https://")) and value.isprintable()


def _remember_form_page(raw: Mapping[str, Any]) -> None:
    """The error page's "Back" for a form post naming a list: the form's page
    (``source_url``, which embed.js fills in), the Referer, or the list's website, as
    :func:`lists.back_page` allows; never a page off the list's sites."""
    slug, source = raw.get("list"), raw.get("source_url")
    if isinstance(slug, str):
        with contextlib.suppress(SQLAlchemyError):
            mailing_list = lists.list_snapshot(slug)
            if mailing_list is not None:
                set_back_url(lists.back_page(mailing_list, source if isinstance(source, str)
                                             else None, request.referrer,
                                             current_settings().base_url))


def _invalid(errors: dict[str, Any]) -> Response:
    flat = {k: v if isinstance(v, list) else [str(v)] for k, v in errors.items()}
    return error_response(422, "Unprocessable Content",
                          "Some fields are missing or invalid; nothing was stored.", errors=flat)


@bp.route("/thanks", methods=["GET"])
@bp.doc(parameters=[{"in": "query", "schema": ThanksQuerySchema}],
        responses=page_responses(_200="Check your inbox (in the list's or the browser's language)"))
def thanks() -> Response:
    """The default page after a form post: check your inbox, and "Back" to the form's page
    (``back``, if it is one of the list's pages), else to the list's website."""
    mailing_list = lists.get_list(request.args.get("list", ""))
    back = lists.back_page(mailing_list, request.args.get("back"), request.referrer,
                           current_settings().base_url) if mailing_list else None
    return render_page("thanks", locale=request.args.get("locale"), mailing_list=mailing_list,
                       back_url=back)


# --- Cross-origin forms ------------------------------------------------------------------
# flask-cors computes the headers (preflight, allowed methods and headers, max age); which
# origins to allow is per request, so its options are built here from the lists rather
# than fixed once by the CORS() extension.

CORS_OPTIONS = {
    "methods": ["POST"],
    "allow_headers": ["Content-Type", "Accept", "Accept-Language", "Content-Language"],
    "max_age": 600,  # browsers reuse a preflight answer for ten minutes
    "supports_credentials": False,
    "always_send": False,
    "automatic_options": True,
    "vary_header": False,  # Vary: Origin is set on every answer below, allowed or not
}


def _named_list_origins() -> list[str]:
    """The landing-page origins of the list a signup names (none when it names none)."""
    try:
        body = request.get_json(silent=True) if request.is_json else request.form
    except HTTPException:  # a body too large to read: no CORS for that answer
        return []
    slug = body.get("list") if isinstance(body, Mapping) else None
    with contextlib.suppress(SQLAlchemyError):  # the answer matters more than its CORS header
        mailing_list = lists.list_snapshot(slug) if isinstance(slug, str) else None
        return list(mailing_list.origins) if mailing_list is not None else []
    return []


@bp.after_request
def cross_origin(response: Response) -> Response:
    """CORS headers for ``fetch()`` from a list's landing pages.

    A preflight carries no body, so it cannot know the list: it is allowed for the
    union of all lists' origins (read from the database each time; browsers cache the
    answer for ``max_age``). The POST then gets ``Access-Control-Allow-Origin`` only
    for an origin of the list it names; :func:`create_subscription` refuses it (403)
    if the origin may not post for that list at all.
    """
    if request.endpoint != "subscribe.create_subscription":
        return response
    response.vary.add("Origin")
    if not request.headers.get("Origin"):
        return response
    allowed: list[str] = []
    if request.method == "OPTIONS":
        with contextlib.suppress(SQLAlchemyError):
            allowed = sorted(lists.all_origins())
    else:
        allowed = _named_list_origins()
    if current_settings().development:  # the demo page, on localhost or 127.0.0.1
        allowed.append(lists.DEVELOPMENT_ORIGINS.pattern)
    if allowed:
        set_cors_headers(response, get_cors_options(current_app, CORS_OPTIONS, {"origins": allowed}))
    return response
