"""The operator API under ``/v1/…``: data-subject rights, proof, lists, outbox, stats.

Every route needs ``Authorization: Bearer <token>`` with a token from
``OPTIN_ADMIN_TOKENS``; missing, empty and wrong tokens all get the same 401,
counted in ``optin_operator_refused_total`` by reason. Every call with a valid
token is audited once its answer is known (:func:`_audit_call`), whatever the
answer, under the token's name (never the token), as the route's endpoint name
(or the domain's name for what it did), with method, route and status; an
address only as its keyed hash. The views only parse and answer: the query
strings and the answers are the schemas in ``optin/schemas.py``, the work is in
rights.py, proof.py, retention.py and outbox.py, and the domain's errors become
problems once, below.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Response, g, jsonify, request, send_file, url_for
from werkzeug.exceptions import UnprocessableEntity

from optin.config import current_settings
from optin.consent import lists
from optin.consent import stats as consent_stats
from optin.consent.addresses import InvalidAddress
from optin.delivery import outbox
from optin.extensions import db
from optin.models import MailingList, OutboxItem, RetentionRun
from optin.ops import metrics
from optin.ops.problems import field_errors, problem
from optin.ops.requestjson import Blueprint
from optin.privacy import audit, document, proof, proof_export, retention, rights
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
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]
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
    "send_welcome": True, "send_goodbye": False, "sender": None, "reply_to": None,
    "controller": "Example GmbH", "privacy_policy_url": "https://www.example.com/datenschutz",
    "purpose": None, "created_at": WHEN,
}
BACKLOG_EXAMPLE = {"pending": 3, "due": 1, "dead": 0, "oldest_pending_age_seconds": 12.5}
PROBLEMS = {
    401: "No operator token, or a wrong one",
    404: "No such list, outbox row or recorded consent",
    409: "The outbox row is not a dead letter; or an erasure found a signup of the address "
         "being processed right now (nothing changed: ask again after Retry-After)",
    422: "A query parameter is missing or invalid",
}
Query = Mapping[str, Any]


def documented(schema: type, *, query: type | None = None, errors: tuple[int, ...] = (),
               example: dict[str, Any] | None = None,
               **doc: Any) -> Callable[[Callable[..., Any]], Any]:
    """An operator route: its query parsed by ``query`` (the view gets the result),
    its answer dumped by ``schema``, and OpenAPI for both, the bearer token and the
    problems it may answer."""

    def decorate(view: Callable[..., Any]) -> Any:
        for status in sorted({401, *errors}, reverse=True):
            view = bp.alt_response(status, schema=ProblemSchema, description=PROBLEMS[status],
                                   content_type="application/problem+json")(view)
        view = bp.response(200, schema, example=example)(view)
        if query is not None:
            view = bp.arguments(query, location="query")(view)
        return bp.doc(security=SECURITY, **doc)(view)

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


def _route() -> str:
    """The URL rule (``/v1/lists/<slug>``), not the path: a path may carry an address."""
    return request.url_rule.rule if request.url_rule else "?"


@bp.before_request
def _authenticate() -> Response | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    credentials = credentials.strip()
    name = token_name(credentials) if scheme.lower() == "bearer" and credentials else None
    if name is None:
        reason = "invalid" if credentials else "missing"
        metrics.operator_refused(reason)
        log.warning("operator API: refused %s %s (%s)", request.method, _route(), reason)
        return _unauthorized(bool(credentials))
    g.operator = name
    return None


def _actor() -> str:
    return g.operator


def _detail(**details: Any) -> None:
    """Add to what the audit row of this call says (never an address)."""
    g.setdefault("operator_audit_details", {}).update(details)


@bp.after_request
def _audit_call(response: Response) -> Response:
    """One audit row for every call that presented a valid token, whatever its answer
    (a refused one was counted by :func:`_authenticate` instead)."""
    if "operator" not in g:
        return response
    email = request.args.get("email")
    try:
        audit.record_call(audit.Call(
            actor=g.operator, action=(request.endpoint or "?").rpartition(".")[2],
            method=request.method, route=_route(), status=response.status_code,
            email_hash=audit.digest(email) if email else None,
            details=g.pop("operator_audit_details", {})))
    except Exception as exc:  # the answer is decided: a failed audit must not change it
        db.session.rollback()
        log.error("operator API: audit of %s %s (%d) not written: %s", request.method,
                  _route(), response.status_code, type(exc).__name__)
        # The answer still goes out, also for the data-subject-rights routes: the domain
        # records an access, a lookup, a proof or an erasure in the very transaction that
        # reads or erases (rights.py, proof.py), so no personal data leaves and no erasure
        # happens unaudited; what is missing here is only the answer's status, or the row
        # of a call the domain refused, which disclosed nothing. Withholding an erasure's
        # answer would not undo it, only hide from the operator that it was done.
    return response


# --- the domain's errors, answered once for every route --------------------------------


@bp.errorhandler(UnprocessableEntity)
def _invalid_query(exc: UnprocessableEntity) -> Response:
    errors = field_errors(exc)
    extra: dict[str, Any] = {"errors": errors} if errors else {}
    return problem(422, "Unprocessable Content", "Query parameters are missing or invalid.",
                   **extra)


@bp.errorhandler(InvalidAddress)
def _bad_address(exc: InvalidAddress) -> Response:
    return problem(422, "Unprocessable Content", "Not an email address.",
                   errors={"email": [str(exc)]})


@bp.errorhandler(lists.UnknownList)
def _unknown_list(exc: lists.UnknownList) -> Response:
    return problem(404, "Not Found", f"No list {exc.args[0]!r}.")


@bp.errorhandler(rights.ErasureBusy)
def _erasure_busy(exc: rights.ErasureBusy) -> Response:
    return problem(409, "Conflict", "A signup of this address is being processed right now, "
                   "behind a mail delivery. Nothing was changed: ask for the erasure again "
                   "in a few seconds.",
                   headers={"Retry-After": str(rights.RETRY_AFTER_SECONDS)})


@bp.errorhandler(proof.NoConsent)
def _no_consent(exc: proof.NoConsent) -> Response:
    return problem(404, "Not Found", str(exc).capitalize() + ".")


# --- data-subject rights ------------------------------------------------------------


@bp.route("/v1/contacts", methods=["GET"])
@documented(ContactExportSchema, query=EmailQuerySchema, errors=(422,))
def access(query: Query) -> rights.ContactExport:
    """Everything stored about an address, as JSON (Art. 15 access, Art. 20 portability)."""
    return rights.export(query["email"], _actor())


@bp.route("/v1/contacts", methods=["DELETE"])
@documented(ErasureSchema, query=EmailQuerySchema, errors=(409, 422))
def erase(query: Query) -> rights.Erasure:
    """Erasure (Art. 17): personal data deleted now, proof kept until it lapses (Art. 17(3)(e))."""
    return rights.erase(query["email"], _actor())


@bp.route("/v1/contacts/subscriptions", methods=["GET"], endpoint="lookup")
@documented(ContactLookupSchema, query=EmailQuerySchema, errors=(422,), example={
    "address": "anna@example.org", "address_hash": "3f5a…", "subscriptions": [SUMMARY_EXAMPLE]})
def contact_subscriptions(query: Query) -> rights.ContactLookup:
    """An address's subscriptions in brief: list, status, dates, retention."""
    return rights.lookup(query["email"], _actor())


def _proof_format(query: Query) -> str:
    chosen: str | None = query.get("format")
    if chosen:
        return chosen
    best = request.accept_mimetypes.best_match(["application/json", "text/html", "application/pdf"])
    return {"text/html": "html", "application/pdf": "pdf"}.get(best or "", "json")


def _document(record: proof.Proof, fmt: str, query: Query) -> Response:
    """The proof as a document: a page whose inline style the CSP allows by its hash, or
    the PDF."""
    locale = document.choose_locale(query.get("locale"), lists.get_list(query["list"]))
    name = f"proof-{record['list']['slug']}-{record['document_id']}"
    if fmt == "pdf":
        response = Response(document.render_pdf(record, locale), mimetype="application/pdf")
        response.headers["Content-Disposition"] = f'inline; filename="{name}.pdf"'
    else:
        html, css = document.render_html(record, locale)
        response = Response(html, mimetype="text/html")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src {document.style_source(css)}; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    response.headers["Content-Language"] = locale
    response.vary.add("Accept-Language")
    return response


@bp.route("/v1/contacts/proof", methods=["GET"], endpoint="proof")
@documented(ProofSchema, query=ProofFormatQuerySchema, errors=(404, 422), description=(
    "`?format=json` (default), `html` (the document, printable, its style inlined; also "
    "chosen by `Accept: text/html`), `pdf` (the same document as an A4 PDF; also "
    "`Accept: application/pdf`) or `receipt` (Kantara Consent Receipt v1.1 with the "
    "double-opt-in evidence). The document is German or English: `?locale=`, else "
    "Accept-Language, else the list's language."),
    responses={200: {"description": "The proof: JSON, a printable page, a PDF, or a receipt",
                     "content": {"application/json": {"schema": {"anyOf": [ProofSchema,
                                                                           ReceiptSchema]}},
                                 **page_responses(_200="")[200]["content"],
                                 "application/pdf": {"schema": {"type": "string",
                                                                "format": "binary"}}}}})
def proof_of_consent(query: Query) -> proof.Proof | Response:
    """The proof of consent for an address on a list (JSON, document, PDF, or receipt)."""
    fmt = _proof_format(query)
    record = proof.build(query["email"], query["list"], _actor(), purpose=fmt)
    if fmt == "receipt":  # not the route's default answer: dumped here
        return jsonify(ReceiptSchema().dump(proof.receipt(record)))
    if fmt in ("html", "pdf"):
        return _document(record, fmt, query)
    return record


@bp.route("/v1/contacts/receipt", methods=["GET"], endpoint="receipt")
@documented(ReceiptSchema, query=ProofQuerySchema, errors=(404, 422))
def consent_receipt(query: Query) -> proof.Receipt:
    """The newest confirmed consent as a Kantara Consent Receipt v1.1 (same as ?format=receipt)."""
    return proof.receipt(proof.build(query["email"], query["list"], _actor(), purpose="receipt"))


# --- lists and consent texts ------------------------------------------------------------


@bp.route("/v1/lists", methods=["GET"], endpoint="lists")
@documented(ListsSchema, example={"lists": [LIST_EXAMPLE]})
def all_lists() -> dict[str, list[MailingList]]:
    """All lists."""
    return {"lists": lists.all_lists()}


def _known_list(slug: str) -> MailingList:
    mailing_list = lists.require_list(slug)
    _detail(list=slug)  # only once it names a list: an unknown "slug" may be anything
    return mailing_list


@bp.route("/v1/lists/<slug>", methods=["GET"], endpoint="list")
@documented(ListDetailSchema, errors=(404,))
def one_list(slug: str) -> MailingList:
    """One list with its consent texts: the current one per locale, and every version."""
    return _known_list(slug)


@bp.route("/v1/lists/<slug>/consent-texts", methods=["GET"])
@documented(ConsentTextsSchema, errors=(404,))
def consent_texts(slug: str) -> MailingList:
    """Every version of a list's consent texts, as shown to signups."""
    return _known_list(slug)


@bp.route("/v1/lists/<slug>/proofs", methods=["GET"], endpoint="proof_export")
@bp.doc(security=SECURITY, parameters=[
    {"in": "query", "name": "locale", "schema": {"type": "string", "enum": ["de", "en"]}},
    {"in": "query", "name": "page", "schema": {"type": "integer", "minimum": 1, "default": 1},
     "description": "which page of the list's proofs (`OPTIN_PROOF_EXPORT_PAGE_SIZE` a page)"}],
    responses={
    200: {"description": "One page of the list's proofs as PDF and JSON, with manifest.json "
                         "(naming the page and the page count) and SHA256SUMS, in one ZIP; "
                         "`Link: <…?page=N>; rel=\"next\"` while pages follow (a whole list "
                         "at once: `optin proof --all`)",
          "headers": {"Link": {"schema": {"type": "string"},
                               "description": "the next page, while there is one"}},
          "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
    401: {"description": PROBLEMS[401], "content": {"application/problem+json": {
        "schema": ProblemSchema}}},
    404: {"description": PROBLEMS[404], "content": {"application/problem+json": {
        "schema": ProblemSchema}}},
    422: {"description": PROBLEMS[422], "content": {"application/problem+json": {
        "schema": ProblemSchema}}}})
def list_proofs(slug: str) -> Response:
    """Audit export: every proof of a list (PDF and JSON) and a manifest with hashes, as ZIP."""
    _known_list(slug)
    locale = request.args.get("locale") or None
    if locale not in (None, "de", "en"):
        return problem(422, "Unprocessable Content", "Query parameters are missing or invalid.",
                       errors={"locale": ["Must be one of: de, en."]})
    number = request.args.get("page", "1")
    if not (number.isascii() and number.isdigit() and 0 < len(number) < 10):
        return problem(422, "Unprocessable Content", "Query parameters are missing or invalid.",
                       errors={"page": ["Must be a page number from 1."]})
    # A page, not the whole list: a request laying out hundreds of PDFs would outlive the
    # web tier's timeout and end as the worker's restart, a 5xx.
    page = proof_export.Page(int(number), current_settings().proof_export_page_size)
    # On disk, not in memory: the folder while it is written, then the ZIP, which is
    # sent from its file and deleted once sent (a temporary file closed by the response).
    archive_file = tempfile.TemporaryFile(prefix="optin-export-")  # noqa: SIM115 (see above)
    try:
        with tempfile.TemporaryDirectory(prefix="optin-export-") as folder:
            try:
                manifest = proof_export.export_list(slug, Path(folder), _actor(), locale=locale,
                                                    workers=1, page=page)
            except proof_export.PageOutOfRange as exc:
                archive_file.close()
                return problem(422, "Unprocessable Content",
                               "Query parameters are missing or invalid.",
                               errors={"page": [f"Must be {exc}."]})
            _detail(proofs=manifest["proofs"], page=page.number)
            with zipfile.ZipFile(archive_file, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(Path(folder).iterdir()):
                    # A PDF is compressed already: stored as it is.
                    archive.write(path, f"proofs-{slug}/{path.name}", compress_type=(
                        zipfile.ZIP_STORED if path.suffix == ".pdf" else zipfile.ZIP_DEFLATED))
    except BaseException:
        archive_file.close()
        raise
    archive_file.seek(0)
    suffix = f"-page-{page.number}" if manifest["page"]["of"] > 1 else ""
    response = send_file(archive_file, mimetype="application/zip", as_attachment=True,
                         download_name=f"proofs-{slug}{suffix}.zip")
    if page.number < manifest["page"]["of"]:
        after = url_for("operator.proof_export", slug=slug, page=page.number + 1,
                        locale=locale)  # None: left out of the query
        response.headers["Link"] = f'<{after}>; rel="next"'
    return response


# --- outbox, retention, stats ---------------------------------------------------------


@bp.route("/v1/outbox", methods=["GET"], endpoint="outbox")
@documented(OutboxSchema, query=OutboxQuerySchema, errors=(422,), example={
    "items": [{"id": 42, "kind": "ac_subscribe", "status": "dead", "subscription_id": 7,
               "attempts": 12, "next_attempt_at": WHEN,
               "last_error": "PermanentFailure: ActiveCampaign 422: list not found",
               "created_at": WHEN, "finished_at": WHEN}],
    "backlog": BACKLOG_EXAMPLE})
def outbox_items(query: Query) -> dict[str, Any]:
    """Recent outbox rows, newest first; ``?status=dead`` for the dead letters."""
    _detail(status=query.get("status"))
    return {"items": outbox.items(query.get("status"), query["limit"]),
            "backlog": outbox.backlog()}


@bp.route(f"/v1/outbox/<int(max={MAX_ID}):item_id>/retry", methods=["POST"])
@documented(OutboxItemSchema, errors=(404, 409))
def outbox_retry(item_id: int) -> OutboxItem | Response:
    """Queue a dead letter again after fixing its cause."""
    _detail(outbox_id=item_id)
    item = db.session.get(OutboxItem, item_id)
    if item is None:
        return problem(404, "Not Found", f"No outbox row {item_id}.")
    if item.status != outbox.DEAD:
        return problem(409, "Conflict", f"Outbox row {item_id} is {item.status}, not dead.")
    outbox.retry_dead([item_id])
    return item  # committed, so it reads the row again


@bp.route("/v1/retention/runs", methods=["GET"])
@documented(RetentionRunsSchema)
def retention_runs() -> dict[str, list[RetentionRun]]:
    """The last retention runs: when, as of when, what they minimized."""
    return {"runs": retention.recent_runs()}


@bp.route("/v1/stats", methods=["GET"])
@documented(StatsSchema, example={
    "subscriptions": {"newsletter": {"confirmed": 120, "pending": 4, "unsubscribed": 9}},
    "suppressions": 9, "outbox": BACKLOG_EXAMPLE, "last_retention_run": None})
def stats() -> dict[str, Any]:
    """Subscriptions per list and status, suppressions, outbox backlog, last retention run
    (the last that minimized: dry runs are in ``/v1/retention/runs`` only)."""
    return {
        "subscriptions": consent_stats.subscriptions_per_list(),
        "suppressions": consent_stats.suppressions(),
        "consents": consent_stats.consents_by_origin(),
        "outbox": outbox.backlog(),
        "last_retention_run": retention.last_run(),
    }
