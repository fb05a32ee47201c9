"""The operator API under ``/v1/…``: data-subject rights, proof, lists, outbox, stats.

Every route needs ``Authorization: Bearer <token>`` with a token from
``OPTIN_ADMIN_TOKENS``; missing, empty and wrong tokens all get the same 401.
Every call is audited under the token's name (never the token). The views
only parse and answer: the work is in rights.py, proof.py, retention.py and
outbox.py.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from flask import Response, g, jsonify, request
from flask_smorest import Blueprint
from sqlalchemy import func, select

from optin.config import current_settings
from optin.consent import lists
from optin.delivery import outbox
from optin.extensions import db
from optin.models import LOCALES, MailingList, OutboxItem, Subscription, Suppression
from optin.ops.problems import problem
from optin.privacy import audit, proof, retention, rights
from optin.schemas import (
    ConsentTextsSchema,
    ContactExportSchema,
    ContactLookupSchema,
    EmailQuerySchema,
    ErasureSchema,
    ListDetailSchema,
    ListsSchema,
    OutboxItemSchema,
    OutboxQuerySchema,
    OutboxSchema,
    ProblemSchema,
    ProofFormatQuerySchema,
    ProofQuerySchema,
    ProofSchema,
    ReceiptSchema,
    RetentionRunsSchema,
    StatsSchema,
)
from optin.web.pages import page_responses

log = logging.getLogger(__name__)

bp = Blueprint("operator", __name__, description="Operator API (bearer token)")
SECURITY = [{"bearerAuth": []}]
MAX_ID = 2**63 - 1  # BIGINT: a larger id would be a database error, not a 404
WHEN = "2026-05-02T08:41:07.000000+00:00"
SUMMARY_EXAMPLE = {
    "id": 7, "list": "newsletter", "status": "confirmed", "created_at": WHEN,
    "confirmed_at": WHEN, "withdrawn_at": None, "withdrawal_origin": None, "erased_at": None,
    "minimized_at": None, "retain_until": None,
    "retention": "Kept while the subscription is active (consent in use); no end date.",
}
LIST_EXAMPLE = {
    "slug": "newsletter", "name": "Example Newsletter", "ac_list_id": 1, "default_locale": "de",
    "redirect_urls": ["https://www.example.com/danke"], "origins": ["https://www.example.com"],
    "send_welcome": True, "send_goodbye": False, "controller": "Example GmbH",
    "privacy_policy_url": "https://www.example.com/datenschutz", "purpose": None,
    "created_at": WHEN,
}
BACKLOG_EXAMPLE = {"pending": 3, "due": 1, "dead": 0, "oldest_pending_age_seconds": 12.5}
PROBLEMS = {
    401: "No operator token, or a wrong one",
    404: "No such list, outbox row or recorded consent",
    409: "The outbox row is not a dead letter",
    422: "A query parameter is missing or invalid",
}


def documented(schema: type, *, query: type | None = None, errors: tuple[int, ...] = (),
               example: dict[str, Any] | None = None, **doc: Any) -> Any:
    """OpenAPI for an operator route: bearer security, its query, its answer and problems."""

    def decorate(view: Any) -> Any:
        for status in sorted({401, *errors}, reverse=True):
            view = bp.alt_response(status, schema=ProblemSchema, description=PROBLEMS[status],
                                   content_type="application/problem+json")(view)
        view = bp.response(200, schema, example=example)(view)
        parameters = [{"in": "query", "schema": query}] if query else []
        return bp.doc(security=SECURITY, parameters=parameters, **doc)(view)

    return decorate


def token_name(presented: str) -> str | None:
    """The name of the configured token equal to ``presented``, else None.

    Compares SHA-256 digests (equal length) with ``hmac.compare_digest``
    against every configured token, without stopping at a match, so the time
    taken reveals neither which token matched nor how much of one did.
    """
    digest = hashlib.sha256(presented.encode()).digest()
    found: str | None = None
    for token, name in current_settings().admin_tokens.items():
        if hmac.compare_digest(digest, hashlib.sha256(token.encode()).digest()):
            found = name
    return found


def _unauthorized(presented: bool) -> Response:
    challenge = 'Bearer realm="optin operator API"'
    if presented:
        challenge += ', error="invalid_token"'
    detail = "This route needs an operator token: Authorization: Bearer <token>."
    if not current_settings().admin_tokens:
        detail += " No token is configured: set OPTIN_ADMIN_TOKENS."
    return problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": challenge})


@bp.before_request
def _authenticate() -> Response | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    credentials = credentials.strip()
    name = token_name(credentials) if scheme.lower() == "bearer" and credentials else None
    if name is None:
        log.warning("operator API: refused %s %s (%s)", request.method, request.path,
                    "wrong token" if credentials else "no token")
        return _unauthorized(bool(credentials))
    g.operator = name
    return None


def _actor() -> str:
    return g.operator


def _arg(name: str) -> str | None:
    return (request.args.get(name) or "").strip() or None


def _missing(*names: str) -> Response:
    return problem(422, "Unprocessable Content", "Required query parameters are missing.",
                   errors={n: ["Missing data for required field."] for n in names})


def _bad_address(exc: Exception) -> Response:
    return problem(422, "Unprocessable Content", "Not an email address.",
                   errors={"email": [str(exc)]})


def _audited(action: str, **details: Any) -> None:
    audit.record(_actor(), action, details=details)
    db.session.commit()


# --- data-subject rights ------------------------------------------------------------


@bp.route("/v1/contacts", methods=["GET"])
@documented(ContactExportSchema, query=EmailQuerySchema, errors=(422,))
def access() -> Response:
    """Everything stored about an address, as JSON (Art. 15 access, Art. 20 portability)."""
    if not (email := _arg("email")):
        return _missing("email")
    try:
        return jsonify(rights.export(email, _actor()))
    except rights.InvalidAddress as exc:
        return _bad_address(exc)


@bp.route("/v1/contacts", methods=["DELETE"])
@documented(ErasureSchema, query=EmailQuerySchema, errors=(422,))
def erase() -> Response:
    """Erasure (Art. 17): personal data deleted now, proof kept until it lapses (Art. 17(3)(e))."""
    if not (email := _arg("email")):
        return _missing("email")
    try:
        return jsonify(rights.erase(email, _actor()))
    except rights.InvalidAddress as exc:
        return _bad_address(exc)


@bp.route("/v1/contacts/subscriptions", methods=["GET"])
@documented(ContactLookupSchema, query=EmailQuerySchema, errors=(422,), example={
    "address": "anna@example.org", "address_hash": "3f5a…", "subscriptions": [SUMMARY_EXAMPLE]})
def contact_subscriptions() -> Response:
    """An address's subscriptions in brief: list, status, dates, retention."""
    if not (email := _arg("email")):
        return _missing("email")
    try:
        return jsonify(rights.lookup(email, _actor()))
    except rights.InvalidAddress as exc:
        return _bad_address(exc)


def _proof_format() -> str:
    chosen = _arg("format")
    if chosen:
        return chosen
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return "html" if best == "text/html" else "json"


@bp.route("/v1/contacts/proof", methods=["GET"])
@documented(ProofSchema, query=ProofFormatQuerySchema, errors=(404, 422), description=(
    "`?format=json` (default), `html` (printable page; also chosen by `Accept: text/html`) "
    "or `receipt` (Kantara Consent Receipt v1.1 with the double-opt-in evidence)."),
    responses={200: {"description": "The proof: JSON, a printable page, or a receipt",
                     "content": {"application/json": {"schema": {"anyOf": [ProofSchema,
                                                                           ReceiptSchema]}},
                                 **page_responses(_200="")[200]["content"]}}})
def proof_of_consent() -> Response:
    """The proof of consent for an address on a list (JSON, printable HTML, or receipt)."""
    email, slug, fmt = _arg("email"), _arg("list"), _proof_format()
    if not email or not slug:
        return _missing(*[n for n, v in (("email", email), ("list", slug)) if not v])
    if fmt not in {"json", "html", "receipt"}:
        return problem(422, "Unprocessable Content", "format must be json, html or receipt.",
                       errors={"format": ["Must be one of: json, html, receipt."]})
    try:
        record = proof.build(email, slug, _actor(), purpose=fmt)
        if fmt == "receipt":
            return jsonify(proof.receipt(record))
    except rights.InvalidAddress as exc:
        return _bad_address(exc)
    except proof.UnknownList:
        return problem(404, "Not Found", f"No list {slug!r}.")
    except proof.NoConsent as exc:
        return problem(404, "Not Found", str(exc).capitalize() + ".")
    if fmt == "html":
        return Response(proof.render_html(record), mimetype="text/html")
    return jsonify(record)


@bp.route("/v1/contacts/receipt", methods=["GET"])
@documented(ReceiptSchema, query=ProofQuerySchema, errors=(404, 422))
def consent_receipt() -> Response:
    """The newest confirmed consent as a Kantara Consent Receipt v1.1 (same as ?format=receipt)."""
    email, slug = _arg("email"), _arg("list")
    if not email or not slug:
        return _missing(*[n for n, v in (("email", email), ("list", slug)) if not v])
    try:
        return jsonify(proof.receipt(proof.build(email, slug, _actor(), purpose="receipt")))
    except rights.InvalidAddress as exc:
        return _bad_address(exc)
    except proof.UnknownList:
        return problem(404, "Not Found", f"No list {slug!r}.")
    except proof.NoConsent as exc:
        return problem(404, "Not Found", str(exc).capitalize() + ".")


# --- lists and consent texts ------------------------------------------------------------


def _list_record(mailing_list: MailingList) -> dict[str, Any]:
    return {
        "slug": mailing_list.slug,
        "name": mailing_list.name,
        "ac_list_id": mailing_list.ac_list_id,
        "default_locale": mailing_list.default_locale,
        "redirect_urls": mailing_list.redirect_urls,
        "origins": mailing_list.origins,
        "send_welcome": mailing_list.send_welcome,
        "send_goodbye": mailing_list.send_goodbye,
        "controller": mailing_list.controller,
        "privacy_policy_url": mailing_list.privacy_policy_url,
        "purpose": mailing_list.purpose,
        "created_at": rights.iso(mailing_list.created_at),
    }


@bp.route("/v1/lists", methods=["GET"])
@documented(ListsSchema, example={"lists": [LIST_EXAMPLE]})
def all_lists() -> Response:
    """All lists."""
    records = [_list_record(m) for m in lists.all_lists()]
    _audited("lists")
    return jsonify(lists=records)


@bp.route("/v1/lists/<slug>", methods=["GET"])
@documented(ListDetailSchema, errors=(404,))
def one_list(slug: str) -> Response:
    """One list with its current consent texts."""
    mailing_list = lists.get_list(slug)
    if mailing_list is None:
        return problem(404, "Not Found", f"No list {slug!r}.")
    record = _list_record(mailing_list)
    record["current_consent_texts"] = {
        locale: rights.consent_text_record(text) for locale in LOCALES
        if (text := lists.current_text(mailing_list, locale)) is not None
    }
    _audited("list", list=slug)
    return jsonify(record)


@bp.route("/v1/lists/<slug>/consent-texts", methods=["GET"])
@documented(ConsentTextsSchema, errors=(404,))
def consent_texts(slug: str) -> Response:
    """Every version of a list's consent texts, as shown to signups."""
    mailing_list = lists.get_list(slug)
    if mailing_list is None:
        return problem(404, "Not Found", f"No list {slug!r}.")
    texts = [rights.consent_text_record(t) for t in
             sorted(mailing_list.consent_texts, key=lambda t: (t.locale, t.version))]
    _audited("consent_texts", list=slug)
    return jsonify(list=slug, consent_texts=texts)


# --- outbox, retention, stats ---------------------------------------------------------


def _outbox_record(item: OutboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "status": item.status,
        "subscription_id": item.subscription_id,
        "attempts": item.attempts,
        "next_attempt_at": rights.iso(item.next_attempt_at),
        "last_error": item.last_error,
        "created_at": rights.iso(item.created_at),
        "finished_at": rights.iso(item.finished_at),
    }


@bp.route("/v1/outbox", methods=["GET"])
@documented(OutboxSchema, query=OutboxQuerySchema, errors=(422,), example={
    "items": [{"id": 42, "kind": "ac_subscribe", "status": "dead", "subscription_id": 7,
               "attempts": 12, "next_attempt_at": WHEN,
               "last_error": "PermanentFailure: ActiveCampaign 422: list not found",
               "created_at": WHEN, "finished_at": WHEN}],
    "backlog": BACKLOG_EXAMPLE})
def outbox_items() -> Response:
    """Recent outbox rows, newest first; ``?status=dead`` for the dead letters."""
    status = _arg("status")
    if status not in (None, outbox.PENDING, outbox.DONE, outbox.DEAD):
        return problem(422, "Unprocessable Content", "status must be pending, done or dead.")
    try:
        limit = min(max(int(_arg("limit") or 100), 1), 1000)
    except ValueError:
        return problem(422, "Unprocessable Content", "limit must be a number.")
    records = [_outbox_record(i) for i in outbox.items(status, limit)]
    backlog = outbox.backlog()
    _audited("outbox", status=status)
    return jsonify(items=records, backlog=backlog)


@bp.route(f"/v1/outbox/<int(max={MAX_ID}):item_id>/retry", methods=["POST"])
@documented(OutboxItemSchema, errors=(404, 409))
def outbox_retry(item_id: int) -> Response:
    """Queue a dead letter again after fixing its cause."""
    item = db.session.get(OutboxItem, item_id)
    if item is None:
        return problem(404, "Not Found", f"No outbox row {item_id}.")
    if item.status != outbox.DEAD:
        return problem(409, "Conflict", f"Outbox row {item_id} is {item.status}, not dead.")
    outbox.retry_dead([item_id])
    _audited("outbox_retry", outbox_id=item_id)
    return jsonify(_outbox_record(db.session.get(OutboxItem, item_id)))


def _run_record(run: Any) -> dict[str, Any]:
    return {"id": run.id, "as_of": rights.iso(run.as_of), "dry_run": run.dry_run,
            "host": run.host, "started_at": rights.iso(run.started_at),
            "finished_at": rights.iso(run.finished_at), "counts": run.counts}


@bp.route("/v1/retention/runs", methods=["GET"])
@documented(RetentionRunsSchema)
def retention_runs() -> Response:
    """The last retention runs: when, as of when, what they minimized."""
    records = [_run_record(r) for r in retention.recent_runs()]
    _audited("retention_runs")
    return jsonify(runs=records)


@bp.route("/v1/stats", methods=["GET"])
@documented(StatsSchema, example={
    "subscriptions": {"newsletter": {"confirmed": 120, "pending": 4, "unsubscribed": 9}},
    "suppressions": 9, "outbox": BACKLOG_EXAMPLE, "last_retention_run": None})
def stats() -> Response:
    """Subscriptions per list and status, suppressions, outbox backlog, last retention run."""
    per_list: dict[str, dict[str, int]] = {m.slug: {} for m in lists.all_lists()}
    rows = db.session.execute(
        select(MailingList.slug, Subscription.status, func.count())
        .join(Subscription, Subscription.list_id == MailingList.id)
        .group_by(MailingList.slug, Subscription.status)
    ).all()
    for slug, status, count in rows:
        per_list[slug][status] = count
    suppressed = db.session.scalar(select(func.count()).select_from(Suppression))
    runs = retention.recent_runs(1)
    body = {
        "subscriptions": per_list,
        "suppressions": suppressed,
        "outbox": outbox.backlog(),
        "last_retention_run": _run_record(runs[0]) if runs else None,
    }
    _audited("stats")
    return jsonify(body)
