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

from .. import audit, lists, outbox, proof, retention, rights
from ..config import current_settings
from ..extensions import db
from ..models import MailingList, OutboxItem, Subscription, Suppression
from ..problems import problem

log = logging.getLogger(__name__)

bp = Blueprint("operator", __name__, description="Operator API (bearer token)")
SECURITY = [{"bearerAuth": []}]


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
    return problem(401, "Unauthorized",
                   "This route needs an operator token: Authorization: Bearer <token>.",
                   headers={"WWW-Authenticate": challenge})


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
@bp.doc(security=SECURITY, parameters=[{"in": "query", "name": "email", "required": True,
                                        "schema": {"type": "string"}}])
def access() -> Response:
    """Everything stored about an address, as JSON (Art. 15 access, Art. 20 portability)."""
    if not (email := _arg("email")):
        return _missing("email")
    try:
        return jsonify(rights.export(email, _actor()))
    except rights.InvalidAddress as exc:
        return _bad_address(exc)


@bp.route("/v1/contacts", methods=["DELETE"])
@bp.doc(security=SECURITY, parameters=[{"in": "query", "name": "email", "required": True,
                                        "schema": {"type": "string"}}])
def erase() -> Response:
    """Erasure (Art. 17): personal data deleted now, proof kept until it lapses (Art. 17(3)(e))."""
    if not (email := _arg("email")):
        return _missing("email")
    try:
        return jsonify(rights.erase(email, _actor()))
    except rights.InvalidAddress as exc:
        return _bad_address(exc)


@bp.route("/v1/contacts/subscriptions", methods=["GET"])
@bp.doc(security=SECURITY)
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
@bp.doc(security=SECURITY, description=(
    "`?format=json` (default), `html` (printable page; also chosen by `Accept: text/html`) "
    "or `receipt` (Kantara Consent Receipt v1.1 with the double-opt-in evidence)."))
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
@bp.doc(security=SECURITY)
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
@bp.doc(security=SECURITY)
def all_lists() -> Response:
    """All lists."""
    records = [_list_record(m) for m in lists.all_lists()]
    _audited("lists")
    return jsonify(lists=records)


@bp.route("/v1/lists/<slug>", methods=["GET"])
@bp.doc(security=SECURITY)
def one_list(slug: str) -> Response:
    """One list with its current consent texts."""
    mailing_list = lists.get_list(slug)
    if mailing_list is None:
        return problem(404, "Not Found", f"No list {slug!r}.")
    record = _list_record(mailing_list)
    record["current_consent_texts"] = {
        locale: rights.consent_text_record(text) for locale in lists.LOCALES
        if (text := lists.current_text(mailing_list, locale)) is not None
    }
    _audited("list", list=slug)
    return jsonify(record)


@bp.route("/v1/lists/<slug>/consent-texts", methods=["GET"])
@bp.doc(security=SECURITY)
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
@bp.doc(security=SECURITY)
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


@bp.route("/v1/outbox/<int:item_id>/retry", methods=["POST"])
@bp.doc(security=SECURITY)
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
@bp.doc(security=SECURITY)
def retention_runs() -> Response:
    """The last retention runs: when, as of when, what they minimized."""
    records = [_run_record(r) for r in retention.recent_runs()]
    _audited("retention_runs")
    return jsonify(runs=records)


@bp.route("/v1/stats", methods=["GET"])
@bp.doc(security=SECURITY)
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
