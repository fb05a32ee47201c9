"""The links in mails: confirm and unsubscribe pages, and their POST actions.

GET never changes anything (mail security scanners open every link); the
button on the page POSTs. ``POST /unsubscribe/<token>`` is also the RFC 8058
one-click target: it accepts ``List-Unsubscribe=One-Click`` from a mail
client with no cookies, and answers without redirecting.
"""

from __future__ import annotations

from flask import Response, request, url_for

from optin.config import current_settings
from optin.consent import signups, subscriptions
from optin.consent.tokens import CONFIRM, UNSUBSCRIBE, TokenExpired, TokenInvalid, read_token
from optin.extensions import db, limiter
from optin.models import ACTIVE_STATUSES, Signup, Subscription, SubscriptionStatus
from optin.ops import ratelimits
from optin.ops.pages import render_page
from optin.ops.requestjson import Blueprint
from optin.schemas import OneClickSchema
from optin.web.pages import negotiated_responses, page_responses
from optin.web.subscribe import client

bp = Blueprint("links", __name__, description="Links in mails: confirm and unsubscribe pages "
               "(HTML, for people and mail clients)")
# One budget per client IP for every page and button here (OPTIN_RATELIMIT_LINKS).
limiter.shared_limit(ratelimits.links_limit, scope="links", key_func=ratelimits.client_key)(bp)
S = SubscriptionStatus
INVALID = "Unknown, altered or outdated link (a page saying so)"
EXPIRED = ("Confirmation link expired: a page offering a new mail, the same whatever the state "
           "(only a pending signup gets one)")
# Every route here shares the links budget; its 429 follows Accept like every other error.
LIMITED = negotiated_responses(_429="Too many requests from this IP (OPTIN_RATELIMIT_LINKS): "
                               "a page, or a problem for a client asking for JSON; see Retry-After")


def _invalid(locale: str | None = None) -> Response:
    return render_page("link_invalid", status=404, locale=locale, reason="invalid", resend_url=None)


def _expired(token: str, sub: Subscription | None) -> Response:
    """The same page for every state: offering a new mail only while the signup is pending
    would tell whoever holds the link whether it was confirmed or withdrawn. The button's
    answer is the same too; only a pending signup gets the mail (resend_confirmation)."""
    return render_page("link_invalid", status=410, reason="expired",
                       resend_url=url_for("links.resend", token=token),
                       locale=sub.locale if sub else None)


def _confirm_token(token: str) -> tuple[Subscription | None, Signup | None, Response | None]:
    """The subscription a confirmation link points to and the signup it was mailed for
    (None for a link older than that, or a subscription older than signup records), or
    the page explaining why not."""
    settings = current_settings()
    try:
        data = read_token(settings.secret_key, CONFIRM, token,
                          max_age_seconds=settings.confirm_ttl_hours * 3600)
    except TokenExpired as exc:
        return None, None, _expired(token, db.session.get(Subscription,
                                                          exc.data.subscription_id))
    except TokenInvalid:
        return None, None, _invalid()
    sub = db.session.get(Subscription, data.subscription_id)
    if sub is None or sub.nonce != data.nonce:
        return None, None, _invalid(sub.locale if sub else None)
    signup = signups.find(sub.id, data.signup_seq)
    if signup is None and data.signup_seq is not None:
        return None, None, _invalid(sub.locale)
    return sub, signup, None


@bp.route("/confirm/<token>", methods=["GET"])
@bp.doc(responses=LIMITED | page_responses(
    _200="A page with a Confirm button (nothing is recorded: link scanners don't consent)",
    _404=INVALID, _410=EXPIRED))
def confirm_page(token: str) -> Response:
    """The page behind the confirmation link in the double-opt-in mail."""
    sub, signup, problem = _confirm_token(token)
    if problem is not None:
        return problem
    assert sub is not None
    if sub.status == S.CONFIRMED:
        return render_page("already_confirmed", locale=sub.locale, mailing_list=sub.mailing_list)
    shown: Signup | Subscription = signup if signup is not None else sub
    consent = shown.consent_text
    return render_page("confirm", locale=shown.locale, mailing_list=sub.mailing_list,
                       action_url=url_for("links.confirm_action", token=token),
                       consent_text=consent.text if consent else None)


@bp.route("/confirm/<token>", methods=["POST"])
@bp.doc(responses=LIMITED | page_responses(
    _200="Consent recorded (or already recorded): a page saying so",
    _404=INVALID, _410=EXPIRED))
def confirm_action(token: str) -> Response:
    """Record consent with this request's IP, time and user agent (idempotent)."""
    settings = current_settings()
    try:
        data = read_token(settings.secret_key, CONFIRM, token,
                          max_age_seconds=settings.confirm_ttl_hours * 3600)
    except TokenExpired as exc:
        return _expired(token, db.session.get(Subscription, exc.data.subscription_id))
    except TokenInvalid:
        return _invalid()
    # One locked read of the subscription and its list; the page needs nothing more.
    done = subscriptions.confirm(data.subscription_id, data.nonce, client(), data.signup_seq)
    if done.outcome == "invalid":
        return _invalid(done.locale)
    return render_page(done.outcome, locale=done.locale, mailing_list=done.mailing_list)


@bp.route("/confirm/<token>/resend", methods=["POST"])
@bp.doc(responses=LIMITED | page_responses(
    _200="The same page whether or not a new mail goes out", _404=INVALID))
def resend(token: str) -> Response:
    """Send a fresh confirmation mail for an expired link (if still pending)."""
    settings = current_settings()
    try:
        data = read_token(settings.secret_key, CONFIRM, token)  # any age
    except TokenInvalid:
        return _invalid()
    subscriptions.resend_confirmation(data.subscription_id, data.nonce, settings,
                                      data.signup_seq)
    shown: Signup | Subscription | None = (signups.find(data.subscription_id, data.signup_seq)
                                           or db.session.get(Subscription, data.subscription_id))
    return render_page("resent", locale=shown.locale if shown else None)


def _unsubscribe_token(token: str) -> tuple[Subscription | None, str | None]:
    try:
        data = read_token(current_settings().secret_key, UNSUBSCRIBE, token)
    except (TokenInvalid, TokenExpired):
        return None, None
    return db.session.get(Subscription, data.subscription_id), data.nonce


@bp.route("/unsubscribe/<token>", methods=["GET"])
@bp.doc(responses=LIMITED | page_responses(
    _200="A page with an Unsubscribe button, or saying the address is already unsubscribed",
    _404=INVALID))
def unsubscribe_page(token: str) -> Response:
    """The page behind the unsubscribe link in every mail."""
    sub, nonce = _unsubscribe_token(token)
    if sub is None:
        return _invalid()
    if sub.status not in ACTIVE_STATUSES:
        return render_page("unsubscribed", locale=sub.locale, mailing_list=sub.mailing_list)
    if sub.nonce != nonce:
        return _invalid(sub.locale)
    return render_page("unsubscribe", locale=sub.locale, mailing_list=sub.mailing_list,
                       action_url=url_for("links.unsubscribe_action", token=token))


@bp.route("/unsubscribe/<token>", methods=["POST"])
@bp.doc(
    description="Also the RFC 8058 one-click target (`List-Unsubscribe-Post: "
    "List-Unsubscribe=One-Click`): mail clients post that body, form-urlencoded or multipart, "
    "without cookies; the answer never redirects. Idempotent.",
    requestBody={"required": False, "content": {
        ct: {"schema": OneClickSchema, "example": {"List-Unsubscribe": "One-Click"}}
        for ct in ("application/x-www-form-urlencoded", "multipart/form-data")}},
    responses=LIMITED | page_responses(_200="Unsubscribed (or already): a page saying so", _404=INVALID))
def unsubscribe_action(token: str) -> Response:
    """Withdraw at once: from our page's button or a mail client's one-click POST."""
    sub, nonce = _unsubscribe_token(token)
    if sub is None or nonce is None:
        return _invalid()
    locale, mailing_list = sub.locale, sub.mailing_list
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    outcome = subscriptions.unsubscribe(sub.id, nonce, client(),
                                        origin="one_click" if one_click else "link")
    if outcome == "invalid":
        return _invalid(locale)
    return render_page("unsubscribed", locale=locale, mailing_list=mailing_list)
