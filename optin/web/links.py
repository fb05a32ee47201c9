"""The links in mails: confirm and unsubscribe pages, and their POST actions.

GET never changes anything (mail security scanners open every link); the
button on the page POSTs. ``POST /unsubscribe/<token>`` is also the RFC 8058
one-click target: it accepts ``List-Unsubscribe=One-Click`` from a mail
client with no cookies, and answers without redirecting. Every other POST
answers with a redirect to the GET page that shows the result
(POST-redirect-GET), so reloading a result page asks nothing.
"""

from __future__ import annotations

from flask import Response, redirect, request, url_for

from optin.config import current_settings
from optin.consent import confirmations, lists, relink, resends, signups, withdrawals
from optin.consent.tokens import CONFIRM, UNSUBSCRIBE, TokenExpired, TokenInvalid, read_token
from optin.extensions import db
from optin.models import ACTIVE_STATUSES, Signup, Subscription, SubscriptionStatus
from optin.ops import ratelimits
from optin.ops.dates import local_date
from optin.ops.identity import mask_address
from optin.ops.pages import render_page
from optin.ops.requestjson import Blueprint
from optin.schemas import OneClickSchema
from optin.web.pages import negotiated_responses, page_responses
from optin.web.subscribe import client

bp = Blueprint("links", __name__, description="Links in mails: confirm and unsubscribe pages "
               "(HTML, for people and mail clients)")
S = SubscriptionStatus
INVALID = "Unknown, altered or outdated link (a page saying so)"
EXPIRED = ("Confirmation link expired: a page offering a new mail, the same whatever the state "
           "(only a pending signup gets one)")
# Every route here shares the links budget; its 429 follows Accept like every other error.
LIMITED = negotiated_responses(_429="Too many requests from this IP (OPTIN_RATELIMIT_LINKS): "
                               "a page, or a problem for a client asking for JSON; see Retry-After")


@bp.before_request
def _links_budget() -> Response | None:
    """One budget per client IP for every page and button here (OPTIN_RATELIMIT_LINKS),
    counted before anything else is read (ops.ratelimits: one Redis round trip)."""
    return ratelimits.check(ratelimits.LINKS)


def _invalid(locale: str | None = None) -> Response:
    return render_page("link_invalid", status=404, locale=locale, reason="invalid", resend_url=None)


def _invalid_unsubscribe(locale: str | None = None) -> Response:
    """A broken unsubscribe link: the page offers a fresh link by mail (consent.relink)."""
    return render_page("link_invalid", status=404, locale=locale, reason="invalid",
                       resend_url=None, relink_url=url_for("links.request_unsubscribe_link"))


def _signup_page(sub: Subscription) -> str | None:
    """Where to sign up again: the signup's form page, if it is one of the list's, else
    the list's website."""
    return lists.back_page(sub.mailing_list, sub.source_url, None, current_settings().base_url)


def _ended(sub: Subscription) -> Response:
    """An old confirmation link of a subscription that was withdrawn: the honest answer.
    The link is signed, so whoever holds it received the mail it came in."""
    return render_page("ended", locale=sub.locale, mailing_list=sub.mailing_list,
                       ended_on=local_date(sub.withdrawn_at, sub.locale),
                       signup_url=_signup_page(sub))


def _goodbye_follows(sub: Subscription) -> bool:
    """Whether a withdrawal of ``sub`` is (or was) followed by the goodbye mail."""
    return bool(sub.mailing_list.send_goodbye and sub.confirmed_at is not None)


def _unsubscribed(sub: Subscription) -> Response:
    return render_page("unsubscribed", locale=sub.locale, mailing_list=sub.mailing_list,
                       goodbye=_goodbye_follows(sub), signup_url=_signup_page(sub))


def _expired(token: str, sub: Subscription | None) -> Response:
    """The same page for every state: offering a new mail only while the signup is pending
    would tell whoever holds the link whether it was confirmed or withdrawn. The button's
    answer is the same too; only a pending signup gets the mail (consent.resends)."""
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
    if sub is not None and sub.status not in ACTIVE_STATUSES and sub.withdrawn_at is not None:
        return None, None, _ended(sub)
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
    shown: Signup | Subscription = signup if signup is not None else sub
    confirmed = sub.status == S.CONFIRMED
    if confirmed or confirmations.pending(sub):
        # ?done=1 is where the Confirm button's POST redirects to (POST-redirect-GET). A
        # click the worker has not applied yet is consent given: no second button, and
        # the page in the language the confirmation will give the subscription.
        page = "confirmed" if request.args.get("done") else "already_confirmed"
        return render_page(page, locale=sub.locale if confirmed else shown.locale,
                           mailing_list=sub.mailing_list,
                           next_url=sub.mailing_list.website_url or _signup_page(sub))
    consent = shown.consent_text
    return render_page("confirm", locale=shown.locale, mailing_list=sub.mailing_list,
                       action_url=url_for("links.confirm_action", token=token),
                       address=mask_address(shown.email or sub.email),
                       consent_text=consent.text if consent else None)


@bp.route("/confirm/<token>", methods=["POST"])
@bp.doc(responses=LIMITED | page_responses(
    _404=INVALID, _410=EXPIRED) | {303: {
        "description": "Consent recorded (or already recorded): see the page saying so"}})
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
    # No lock and no state machine here: the click is queued for the worker (its own
    # time, IP and user agent), so every valid click costs one read, one INSERT, COMMIT.
    click = confirmations.accept(data.subscription_id, data.nonce, data.signup_seq, client())
    if click.outcome == "ended":
        sub = db.session.get(Subscription, data.subscription_id)
        assert sub is not None
        return _ended(sub)
    if click.outcome == "invalid":
        return _invalid(click.locale)
    return redirect(url_for("links.confirm_page", token=token, done=1), 303)  # type: ignore[return-value]


@bp.route("/confirm/<token>/resend", methods=["POST"])
@bp.doc(responses=LIMITED | page_responses(_404=INVALID) | {303: {
    "description": "The same answer whether or not a new mail goes out: see the page"}})
def resend(token: str) -> Response:
    """Send a fresh confirmation mail for an expired link (if still pending)."""
    settings = current_settings()
    try:
        data = read_token(settings.secret_key, CONFIRM, token)  # any age
    except TokenInvalid:
        return _invalid()
    resends.accept(data.subscription_id, data.nonce, data.signup_seq)
    shown: Signup | Subscription | None = (signups.find(data.subscription_id, data.signup_seq)
                                           or db.session.get(Subscription, data.subscription_id))
    # No token in the target: the answer stays the same whatever the state.
    return redirect(url_for("links.resent",  # type: ignore[return-value]
                            locale=shown.locale if shown else None), 303)


@bp.route("/confirm/resent", methods=["GET"])
@bp.doc(responses=LIMITED | page_responses(
    _200="Check your inbox: the same page whether or not a new mail went out"))
def resent() -> Response:
    """Where the resend button redirects to; sends nothing itself."""
    locale = request.args.get("locale")
    return render_page("resent", locale=locale if locale in ("de", "en") else None)


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
        return _invalid_unsubscribe()
    if sub.status not in ACTIVE_STATUSES:
        return _unsubscribed(sub)
    if sub.nonce != nonce:
        return _invalid_unsubscribe(sub.locale)
    if withdrawals.pending([sub.id]):  # queued behind a delivery: as good as done
        return _unsubscribed(sub)
    return render_page("unsubscribe", locale=sub.locale, mailing_list=sub.mailing_list,
                       address=mask_address(sub.email), goodbye=_goodbye_follows(sub),
                       action_url=url_for("links.unsubscribe_action", token=token))


@bp.route("/unsubscribe/<token>", methods=["POST"])
@bp.doc(
    description="Also the RFC 8058 one-click target (`List-Unsubscribe-Post: "
    "List-Unsubscribe=One-Click`): mail clients post that body, form-urlencoded or multipart, "
    "without cookies; the answer never redirects. Idempotent.",
    requestBody={"required": False, "content": {
        ct: {"schema": OneClickSchema, "example": {"List-Unsubscribe": "One-Click"}}
        for ct in ("application/x-www-form-urlencoded", "multipart/form-data")}},
    responses=LIMITED | page_responses(
        _200="One-click: unsubscribed (or already), a page saying so", _404=INVALID) | {
        303: {"description": "The page's button: unsubscribed (or already), see the page "
              "saying so"}})
def unsubscribe_action(token: str) -> Response:
    """Withdraw at once: from our page's button or a mail client's one-click POST."""
    sub, nonce = _unsubscribe_token(token)
    if sub is None or nonce is None:
        return _invalid_unsubscribe()
    locale, sub_id = sub.locale, sub.id
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    outcome = withdrawals.unsubscribe(sub.id, nonce, client(),
                                        origin="one_click" if one_click else "link")
    if outcome == "invalid":
        return _invalid_unsubscribe(locale)
    if not one_click:  # a person's button: POST-redirect-GET
        return redirect(url_for("links.unsubscribe_page", token=token), 303)  # type: ignore[return-value]
    withdrawn = db.session.get(Subscription, sub_id)
    assert withdrawn is not None
    return _unsubscribed(withdrawn)


@bp.route("/unsubscribe/link", methods=["POST"])
@bp.doc(requestBody={"required": True, "content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "properties": {"email": {"type": "string"},
                                                "locale": {"type": "string"}}},
    "example": {"email": "anna@example.org", "locale": "de"}}}},
        responses=LIMITED | {303: {"description": "The same page for every address: check "
                                   "your inbox"}})
def request_unsubscribe_link() -> Response:
    """Mail a fresh unsubscribe link (for a broken one); the answer never says whether
    the address is subscribed (consent.relink)."""
    relink.request_unsubscribe_link(request.form.get("email", ""), current_settings())
    locale = request.form.get("locale")
    return redirect(url_for("links.unsubscribe_link_requested",  # type: ignore[return-value]
                            locale=locale if locale in ("de", "en") else None), 303)


@bp.route("/unsubscribe/link", methods=["GET"])
@bp.doc(responses=LIMITED | page_responses(_200="Check your inbox (the same for every address)"))
def unsubscribe_link_requested() -> Response:
    """Where the fresh-link form redirects to."""
    return render_page("relinked", locale=request.args.get("locale"))
