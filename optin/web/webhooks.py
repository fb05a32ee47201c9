"""``POST /webhooks/activecampaign``: unsubscribes, complaints and bounces from ActiveCampaign.

ActiveCampaign posts form fields (``type``, ``date_time``, ``initiated_by``,
``initiated_from``, ``list``, ``contact[id]``, ``contact[email]``, …), signs
nothing and cannot add headers, so the URL carries a shared secret
(``?secret=…``), compared in constant time. The answer comes at once: the
withdrawal is one local transaction, and ActiveCampaign hears about it
through the outbox like any other. Webhooks are never retried, so every
authenticated post gets a 2xx, known address or not (``optin ac reconcile``
catches what a lost webhook missed); and never a 410, which would switch the
webhook off for good. A post with no form fields at all (no body, JSON, plain
text) is not an ActiveCampaign event: a 400 problem, after the secret check.
"""

from __future__ import annotations

import hmac
import logging

from flask import Response, jsonify, request

from optin.activecampaign import sync
from optin.config import current_settings
from optin.ops import ratelimits
from optin.ops.logs import pseudonym
from optin.ops.problems import problem
from optin.ops.requestjson import Blueprint
from optin.schemas import ProblemSchema, StatusSchema, WebhookFormSchema

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__, description="Events from ActiveCampaign")

# What ActiveCampaign says about the event, kept in the ledger as evidence: form field -> key.
EVIDENCE = {
    "type": "type",
    "initiated_by": "initiated_by",
    "initiated_from": "initiated_from",
    "date_time": "reported_at",
    "contact[id]": "ac_contact_id",
    "campaign[id]": "ac_campaign_id",
    "unsubscribe[reason]": "reason",
    "bounce[type]": "bounce_type",
    "bounce[code]": "bounce_code",
    "bounce[description]": "bounce_description",
}

WEBHOOK_EXAMPLE = {"type": "unsubscribe", "date_time": "2026-05-02T08:41:07-05:00",
                   "initiated_by": "contact", "initiated_from": "unsubscribe_link", "list": "1",
                   "contact[id]": "42", "contact[email]": "anna@example.org"}


def _refused() -> Response | None:
    """A problem answer unless the request carries the configured secret."""
    expected = current_settings().ac_webhook_secret
    if not expected:
        return problem(403, "Forbidden", "Webhooks are disabled: OPTIN_AC_WEBHOOK_SECRET is unset.")
    given = request.args.get("secret")
    if not given:
        return problem(401, "Unauthorized", "The webhook URL must carry ?secret=…",
                       headers={"WWW-Authenticate": 'Secret realm="webhooks"'})
    if not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("ActiveCampaign webhook with a wrong secret from IP %s",
                    pseudonym(request.remote_addr))
        return problem(403, "Forbidden", "Wrong webhook secret.")
    return None


def _list_id(raw: str | None) -> int | None:
    """The ActiveCampaign list id; None (every synced list) when absent or 0."""
    try:
        value = int(raw or 0)
    except ValueError:
        return -1  # matches no list
    if not -(2**31) <= value < 2**31:
        return -1  # no list has it, and the database column could not even hold it
    return value or None


@bp.route("/webhooks/activecampaign", methods=["POST"])
@bp.doc(security=[], parameters=[{"in": "query", "name": "secret", "required": True,
                                  "schema": {"type": "string"}}],
        requestBody={"required": True, "content": {"application/x-www-form-urlencoded": {
            "schema": WebhookFormSchema, "example": WEBHOOK_EXAMPLE}}})
@bp.response(200, StatusSchema, description="Recorded, or nothing to record (the same answer "
             "for known and unknown addresses)", example={"status": "ok"})
@bp.alt_response(400, schema=ProblemSchema, description="No form fields (no body, or not "
                 "application/x-www-form-urlencoded or multipart/form-data); nothing recorded",
                 content_type="application/problem+json")
@bp.alt_response(401, schema=ProblemSchema, description="No secret",
                 content_type="application/problem+json")
@bp.alt_response(403, schema=ProblemSchema, description="Wrong secret, or webhooks disabled",
                 content_type="application/problem+json")
@bp.alt_response(429, schema=ProblemSchema,
                 description="Too many posts from this IP (OPTIN_RATELIMIT_WEBHOOK)",
                 content_type="application/problem+json")
def activecampaign() -> Response:
    """Record an unsubscribe, spam complaint or bounce reported by ActiveCampaign."""
    limited = ratelimits.check(ratelimits.WEBHOOK)  # per IP, before the secret is looked at
    if limited is not None:
        return limited
    refused = _refused()
    if refused is not None:
        return refused
    form = request.form
    if not form:
        return problem(400, "Bad Request", "ActiveCampaign posts its events as form fields "
                       "(application/x-www-form-urlencoded); this request carried none.")
    kind = (form.get("type") or "").strip().lower()
    email = (form.get("contact[email]") or "").strip()
    if not email:
        return jsonify(status="ignored")
    details = {key: form[name][:500] for name, key in EVIDENCE.items() if form.get(name)}
    event = sync.InboundEvent(type=kind, email=email, ac_list_id=_list_id(form.get("list")),
                              at=sync.parse_ac_time(form.get("date_time")), details=details)
    changed = sync.record_inbound(event)
    # The same answer whether or not the address is known.
    log.info("ActiveCampaign webhook %s: %s subscription(s) changed", kind or "(no type)", changed)
    return jsonify(status="ok")
