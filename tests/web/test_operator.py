"""The operator API: bearer tokens, the audit trail, lists, outbox, stats."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event, select

from optin.extensions import db
from optin.models import AuditEntry, ConsentEvent, OutboxItem, Subscription
from optin.privacy import rights

from ..conftest import ADMIN_TOKEN, deliver

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

ROUTES = [
    ("GET", "/v1/contacts?email=anna@example.org"),
    ("DELETE", "/v1/contacts?email=anna@example.org"),
    ("GET", "/v1/contacts/subscriptions?email=anna@example.org"),
    ("GET", "/v1/contacts/proof?email=anna@example.org&list=newsletter"),
    ("GET", "/v1/contacts/receipt?email=anna@example.org&list=newsletter"),
    ("GET", "/v1/lists"),
    ("GET", "/v1/lists/newsletter"),
    ("GET", "/v1/lists/newsletter/consent-texts"),
    ("GET", "/v1/outbox?status=dead"),
    ("POST", "/v1/outbox/1/retry"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/retention/runs"),
]

BAD_HEADERS = {
    "missing": {},
    "empty": {"Authorization": ""},
    "empty bearer": {"Authorization": "Bearer "},
    "blank bearer": {"Authorization": "Bearer    "},
    "wrong": {"Authorization": "Bearer wrong-token-0123456789abcdef"},
    "prefix of the token": {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    "token plus a character": {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    "other scheme": {"Authorization": f"Basic {ADMIN_TOKEN}"},
    "token without scheme": {"Authorization": ADMIN_TOKEN},
}


def _audit(app) -> list[AuditEntry]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_routes_refuse_missing_empty_and_wrong_tokens(app, client, confirmed, method, path):
    confirmed("anna@example.org", first_name="Anna")
    for case, headers in BAD_HEADERS.items():
        response = client.open(path, method=method, headers=headers)
        assert response.status_code == 401, case
        assert response.mimetype == "application/problem+json", case
        assert response.headers["WWW-Authenticate"].startswith("Bearer "), case
        assert response.json["status"] == 401
        assert "anna" not in response.get_data(as_text=True)
    assert _audit(app) == []
    with app.app_context():  # nothing happened, in particular no erasure
        sub = db.session.scalar(select(Subscription))
        assert sub.status == "confirmed" and sub.first_name == "Anna"


def test_wrong_token_is_flagged_as_invalid_token(client, app):
    assert 'error="invalid_token"' in client.get(
        "/v1/lists", headers=BAD_HEADERS["wrong"]).headers["WWW-Authenticate"]
    assert "error=" not in client.get("/v1/lists").headers["WWW-Authenticate"]


@pytest.mark.parametrize("tokens", [None, ""])
def test_no_configured_tokens_refuses_everyone(app_config, tokens):
    from ..conftest import build_app

    app_config.pop("OPTIN_ADMIN_TOKENS")
    if tokens is not None:
        app_config["OPTIN_ADMIN_TOKENS"] = tokens
    app = build_app(app_config)
    client = app.test_client()
    refused = client.get("/v1/lists", headers=AUTH)
    assert refused.status_code == 401
    assert "set OPTIN_ADMIN_TOKENS" in refused.json["detail"]  # says what the operator must do
    assert client.get("/v1/lists", headers={"Authorization": "Bearer "}).status_code == 401
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_with_tokens_configured_the_401_does_not_ask_for_them(client):
    refused = client.get("/v1/lists")
    assert refused.status_code == 401
    assert "OPTIN_ADMIN_TOKENS" not in refused.json["detail"]


def test_development_works_out_of_the_box_with_a_generated_token(app_config):
    from ..conftest import build_app

    app_config.pop("OPTIN_ADMIN_TOKENS")
    app_config["OPTIN_ENV"] = "development"
    app = build_app(app_config)
    token = (Path(app_config["OPTIN_INSTANCE_PATH"]) / "admin_token").read_text()
    client = app.test_client()
    assert client.get("/v1/lists", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/v1/lists", headers=AUTH).status_code == 401
    assert [(a.actor, a.action) for a in _audit(app)] == [("development", "lists")]
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_each_token_acts_under_its_name_and_is_never_stored(app_with):
    app, client = app_with(
        OPTIN_ADMIN_TOKENS="ops:first-token-0123456789ab,legal:second-token-0123456789")
    assert client.get("/v1/lists", headers={"Authorization": "Bearer first-token-0123456789ab"}
                      ).status_code == 200
    assert client.get("/v1/stats", headers={"Authorization": "bearer second-token-0123456789"}
                      ).status_code == 200
    assert [(a.actor, a.action) for a in _audit(app)] == [("ops", "lists"), ("legal", "stats")]
    with app.app_context():
        stored = "\n".join(repr(tuple(r)) for t in db.metadata.sorted_tables
                           for r in db.session.execute(t.select()))
    assert "first-token" not in stored and "second-token" not in stored


@pytest.fixture
def app_with(app_config):
    """Build an app with extra settings (for token configurations)."""
    from ..conftest import build_app

    built = []

    def _build(**overrides: str):
        app_config.update(overrides)
        app = build_app(app_config)
        built.append(app)
        return app, app.test_client()

    yield _build
    for app in built:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_contact_calls_are_audited_and_noted_on_the_ledger(app, client, confirmed):
    confirmed("anna@example.org")
    assert client.get("/v1/contacts/subscriptions?email=Anna@Example.org",
                      headers=AUTH).status_code == 200
    assert client.get("/v1/contacts?email=anna@example.org", headers=AUTH).status_code == 200
    assert client.get("/v1/contacts/proof?email=anna@example.org&list=newsletter",
                      headers=AUTH).status_code == 200
    entries = _audit(app)
    assert [(e.actor, e.action) for e in entries] == [("ops", "lookup"), ("ops", "access"),
                                                      ("ops", "proof")]
    assert len({e.email_hash for e in entries}) == 1 and entries[0].email_hash
    with app.app_context():
        events = db.session.scalars(select(ConsentEvent).where(ConsentEvent.origin == "operator")
                                    .order_by(ConsentEvent.seq)).all()
        document_id = events[-1].details.get("document_id")  # the proof document's own id
        assert [(e.kind, e.details) for e in events] == [
            ("accessed", {"actor": "ops", "purpose": "lookup"}),
            ("accessed", {"actor": "ops", "purpose": "access"}),
            ("proof_printed", {"actor": "ops", "purpose": "json", "document_id": document_id}),
        ]
        assert document_id and len(document_id) == 36
        stored = "\n".join(repr(tuple(r)) for r in db.session.execute(AuditEntry.__table__.select()))
    assert "anna@example.org" not in stored and ADMIN_TOKEN not in stored


def test_contact_routes_validate_the_address(client, app):
    missing = client.get("/v1/contacts", headers=AUTH)
    assert missing.status_code == 422 and "email" in missing.json["errors"]
    bad = client.delete("/v1/contacts?email=not-an-address", headers=AUTH)
    assert bad.status_code == 422 and "email" in bad.json["errors"]
    proof = client.get("/v1/contacts/proof?email=a@example.org", headers=AUTH)
    assert proof.status_code == 422 and list(proof.json["errors"]) == ["list"]


def test_lookup_of_a_contacts_subscriptions(client, confirmed, signed_up):
    confirmed("anna@example.org")
    body = client.get("/v1/contacts/subscriptions?email=anna@example.org", headers=AUTH).json
    [sub] = body["subscriptions"]
    assert sub["list"] == "newsletter" and sub["status"] == "confirmed"
    assert sub["retain_until"] is None and "active" in sub["retention"]
    assert "events" not in sub
    unknown = client.get("/v1/contacts/subscriptions?email=nobody@example.org", headers=AUTH).json
    assert unknown["subscriptions"] == []


def test_lists_and_consent_texts(client, app, newsletter, runner):
    assert runner.invoke(args=["consent-texts", "add", "newsletter", "--locale", "de",
                               "--text", "Neue Fassung"]).exit_code == 0
    body = client.get("/v1/lists", headers=AUTH).json
    assert [entry["slug"] for entry in body["lists"]] == ["newsletter"]
    one = client.get("/v1/lists/newsletter", headers=AUTH).json
    assert one["name"] == "Example Newsletter"
    assert one["current_consent_texts"]["de"]["version"] == 2
    assert one["current_consent_texts"]["de"]["text"] == "Neue Fassung"
    texts = client.get("/v1/lists/newsletter/consent-texts", headers=AUTH).json["consent_texts"]
    assert [(t["locale"], t["version"]) for t in texts] == [("de", 1), ("de", 2), ("en", 1)]
    assert all(len(t["sha256"]) == 64 for t in texts)
    assert client.get("/v1/lists/nope", headers=AUTH).status_code == 404
    assert client.get("/v1/lists/nope/consent-texts", headers=AUTH).status_code == 404


def test_lists_show_json_is_the_api_answer(client, runner, newsletter):
    assert runner.invoke(args=["lists", "update", "newsletter", "--sender",
                               "News <news@example.com>"]).exit_code == 0
    shown = runner.invoke(args=["lists", "show", "newsletter", "--json"])
    assert shown.exit_code == 0, shown.output
    answer = client.get("/v1/lists/newsletter", headers=AUTH).json
    assert json.loads(shown.output) == answer
    assert answer["sender"] == "News <news@example.com>"
    assert [(t["locale"], t["version"]) for t in answer["consent_texts"]] == [("de", 1), ("en", 1)]


def test_outbox_query_is_validated_and_its_limit_in_range(client, signed_up):
    signed_up("anna@example.org")
    signed_up("bea@example.org")  # two signups' intake rows and their two mails, delivered
    assert len(client.get("/v1/outbox?limit=1000", headers=AUTH).json["items"]) == 4
    assert len(client.get("/v1/outbox?limit=1", headers=AUTH).json["items"]) == 1
    assert len(client.get("/v1/outbox?status=%20done%20&limit=", headers=AUTH
                          ).json["items"]) == 4
    for query, field in (("limit=abc", "limit"), ("status=bogus", "status"), ("limit=1001", "limit"),
                         ("limit=0", "limit"), ("limit=1.5", "limit"), ("limit=" + "9" * 5000, "limit")):
        refused = client.get(f"/v1/outbox?{query}", headers=AUTH)
        assert refused.status_code == 422 and refused.mimetype == "application/problem+json"
        assert list(refused.json["errors"]) == [field]
    # The document says so.
    [limit] = [p for p in client.get("/openapi.json").json["paths"]["/v1/outbox"]["get"]["parameters"]
               if p["name"] == "limit"]
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)


def test_dead_letters_listed_and_retried(client, app):
    with app.app_context():
        item = OutboxItem.pending("no_such_kind", payload={"n": 1})
        db.session.add(item)
        db.session.commit()
        item_id = item.id
    deliver(app)
    dead = client.get("/v1/outbox?status=dead", headers=AUTH).json
    assert [i["id"] for i in dead["items"]] == [item_id]
    assert "no handler" in dead["items"][0]["last_error"]
    assert dead["backlog"]["dead"] == 1
    retried = client.post(f"/v1/outbox/{item_id}/retry", headers=AUTH)
    assert retried.status_code == 200 and retried.json["status"] == "pending"
    assert client.post(f"/v1/outbox/{item_id}/retry", headers=AUTH).status_code == 409
    assert client.post("/v1/outbox/999999/retry", headers=AUTH).status_code == 404
    assert client.get("/v1/outbox?status=bogus", headers=AUTH).status_code == 422
    with app.app_context():
        assert db.session.get(OutboxItem, item_id).status == "pending"
    assert ("ops", "outbox_retry") in [(a.actor, a.action) for a in _audit(app)]


def test_stats_and_retention_runs(client, app, confirmed, signed_up, runner):
    confirmed("anna@example.org")
    signed_up("bea@example.org")
    assert runner.invoke(args=["retention", "run", "--dry-run"]).exit_code == 0
    stats = client.get("/v1/stats", headers=AUTH).json
    assert stats["subscriptions"] == {"newsletter": {"confirmed": 1, "pending": 1}}
    assert stats["suppressions"] == 0
    assert stats["last_retention_run"] is None  # a dry run changed nothing: not a run
    assert "dead" in stats["outbox"]
    runs = client.get("/v1/retention/runs", headers=AUTH).json["runs"]
    assert len(runs) == 1 and runs[0]["counts"] == {"unconfirmed_signup": 0, "withdrawn_consent": 0}
    assert runs[0]["dry_run"] is True  # the history still shows that someone looked

    assert runner.invoke(args=["retention", "run"]).exit_code == 0
    assert runner.invoke(args=["retention", "run", "--dry-run"]).exit_code == 0
    last = client.get("/v1/stats", headers=AUTH).json["last_retention_run"]
    real = [r for r in client.get("/v1/retention/runs", headers=AUTH).json["runs"] if not r["dry_run"]]
    assert last["dry_run"] is False and last["id"] == real[0]["id"]


def test_openapi_documents_the_operator_routes(client):
    spec = client.get("/openapi.json").json
    assert {"/v1/contacts", "/v1/contacts/proof", "/v1/lists", "/v1/stats"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/contacts"]["delete"]["security"] == [{"bearerAuth": []}]


# --- the audit trail: every call with a valid token, whatever its answer ----------------

OUTBOX_RETRY_ROUTE = "/v1/outbox/<int(max=9223372036854775807):item_id>/retry"


@contextmanager
def failing(app, *prefixes: str) -> Iterator[None]:
    """The database refuses every statement that starts with one of ``prefixes`` (as a
    driver error: the app sees what a real failure would give it)."""
    with app.app_context():
        engine = db.engine

    def refuse(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(prefixes):
            raise conn.dialect.loaded_dbapi.DatabaseError("injected failure")

    event.listen(engine, "before_cursor_execute", refuse)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", refuse)


def _stored_audit(app) -> str:
    with app.app_context():
        return "\n".join(repr(tuple(r)) for r in db.session.execute(AuditEntry.__table__.select()))


def _digest(app, address: str) -> str:
    with app.app_context():
        return rights.identify(address)[1]


def _one_new_row(app, before: list[AuditEntry]) -> AuditEntry:
    seen = {e.id for e in before}
    new = [e for e in _audit(app) if e.id not in seen]
    assert len(new) == 1, [(e.action, e.details) for e in new]
    return new[0]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_authenticated_call_leaves_one_audit_row_with_its_answer(
        app, client, confirmed, method, path):
    confirmed("anna@example.org")
    before = _audit(app)
    response = client.open(path, method=method, headers=AUTH)
    entry = _one_new_row(app, before)
    assert entry.actor == "ops"
    assert (entry.method, entry.status) == (method, response.status_code)
    rule, _ = app.url_map.bind("newsletter.test").match(path.partition("?")[0], method,
                                                         return_rule=True)
    assert entry.route == rule.rule
    if "email=" in path:
        assert entry.email_hash == _digest(app, "anna@example.org")
    assert "anna" not in _stored_audit(app)


@pytest.mark.parametrize(("method", "path", "status", "action", "route", "details"), [
    ("GET", "/v1/contacts?email=anna@example..org", 422, "access", "/v1/contacts", {}),
    ("DELETE", "/v1/contacts?email=anna(at)example.org", 422, "erase", "/v1/contacts", {}),
    ("GET", "/v1/contacts/subscriptions?email=", 422, "lookup", "/v1/contacts/subscriptions", {}),
    ("GET", "/v1/contacts/proof?email=anna@example.org&list=nope", 404, "proof",
     "/v1/contacts/proof", {}),
    # Local parts with letters beyond a-f: the audit row holds hex hashes and ids, which a
    # local part like "bea" can be found in by chance (seen in CI).
    ("GET", "/v1/contacts/receipt?email=bertha@example.org&list=newsletter", 404, "proof",
     "/v1/contacts/receipt", {"list": "newsletter", "format": "receipt", "subscriptions": 0}),
    ("GET", "/v1/lists/nope", 404, "list", "/v1/lists/<slug>", {}),
    ("GET", "/v1/lists/nope/consent-texts", 404, "consent_texts",
     "/v1/lists/<slug>/consent-texts", {}),
    ("POST", "/v1/outbox/999999/retry", 404, "outbox_retry", OUTBOX_RETRY_ROUTE,
     {"outbox_id": 999999}),
    ("GET", "/v1/outbox?status=bogus", 422, "outbox", "/v1/outbox", {}),
])
def test_refused_and_failed_operator_calls_are_audited(app, client, newsletter, method, path,
                                                       status, action, route, details):
    before = _audit(app)
    response = client.open(path, method=method, headers=AUTH)
    assert response.status_code == status
    entry = _one_new_row(app, before)
    assert (entry.actor, entry.action, entry.method, entry.route, entry.status) == (
        "ops", action, method, route, status)
    assert {k: v for k, v in entry.details.items() if k != "document_id"} == details
    address = path.partition("email=")[2].partition("&")[0]
    if address:  # whatever was asked about is kept as its keyed hash only
        assert entry.email_hash and len(entry.email_hash) == 64
        assert address not in _stored_audit(app) and address.split("@")[0] not in _stored_audit(app)


def test_a_call_that_fails_in_the_database_is_audited_and_changes_nothing(app, client, confirmed):
    confirmed("anna@example.org")
    before = _audit(app)
    with failing(app, "UPDATE SUBSCRIPTION"):
        response = client.delete("/v1/contacts?email=anna@example.org", headers=AUTH)
    assert response.status_code == 500
    entry = _one_new_row(app, before)  # the erasure's own row rolled back with it
    assert (entry.action, entry.method, entry.route, entry.status) == (
        "erase", "DELETE", "/v1/contacts", 500)
    assert entry.email_hash == _digest(app, "anna@example.org")
    assert "anna" not in _stored_audit(app)
    with app.app_context():
        assert db.session.scalar(select(Subscription)).status == "confirmed"

    with failing(app, "SELECT MAILING_LIST"):
        assert client.get("/v1/lists", headers=AUTH).status_code == 500
    entry = _one_new_row(app, before + [entry])
    assert (entry.action, entry.status) == ("lists", 500)


def test_an_audit_that_cannot_be_written_never_turns_a_refusal_into_an_error(
        app, client, confirmed, caplog):
    confirmed("anna@example.org")
    before = _audit(app)
    with caplog.at_level(logging.ERROR), failing(app, "INSERT INTO AUDIT_ENTRY",
                                                 "UPDATE AUDIT_ENTRY"):
        assert client.get("/v1/lists/nope", headers=AUTH).status_code == 404
        assert client.get("/v1/contacts?email=anna@example..org", headers=AUTH).status_code == 422
        assert client.get("/v1/lists", headers=AUTH).status_code == 200
        # An address's data is disclosed in the transaction that records the disclosure:
        # without that row, nothing goes out.
        assert client.get("/v1/contacts?email=anna@example.org", headers=AUTH).status_code == 500
    assert [e.id for e in _audit(app)] == [e.id for e in before]
    assert "audit" in caplog.text and "anna" not in caplog.text

    with failing(app, "UPDATE AUDIT_ENTRY"):  # recorded, but its answer could not be added
        access = client.get("/v1/contacts?email=anna@example.org", headers=AUTH)
    assert access.status_code == 200 and access.json["address"] == "anna@example.org"
    entry = _one_new_row(app, before)
    assert (entry.action, entry.status) == ("access", None)
