"""``/openapi.json``: a valid OpenAPI 3 document covering every route, and a bounded
schemathesis run against the app (no 5xx, answers as documented, no leaked tracebacks)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from optin.consent import lists
from optin.extensions import db
from optin.models import OutboxItem

from ..conftest import ADMIN_TOKEN, build_app, deliver, links, make_config, signup

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WEBHOOK_SECRET = "webhook-secret-0123456789"
# Not part of the API: assets, the document itself, development-only pages.
UNDOCUMENTED = {"static", "api-docs.openapi_json"}
UNDOCUMENTED_PREFIXES = ("demo.",)


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


@pytest.fixture
def spec(client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_the_document_is_valid_openapi_3(spec):
    assert spec["openapi"].startswith("3.")
    validate(spec)  # raises on any violation of the OpenAPI 3 schema


def test_every_route_is_documented(app, spec):
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED or rule.endpoint.startswith(UNDOCUMENTED_PREFIXES):
            continue
        operations = spec["paths"].get(_openapi_path(rule.rule), {})
        missing += [f"{method} {rule.rule}" for method in rule.methods - {"HEAD", "OPTIONS"}
                    if method.lower() not in operations]
    assert missing == []


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def test_every_body_has_an_example(spec):
    bodies = 0
    for path, method, operation in _operations(spec):
        for content_type, media in operation.get("requestBody", {}).get("content", {}).items():
            bodies += 1
            assert media.get("example") or media.get("examples"), (method, path, content_type)
    assert bodies >= 4  # signup (JSON, form), one-click unsubscribe (2 encodings), webhook


def test_operator_routes_need_the_bearer_token_and_errors_are_problems(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {"type": "http",
                                                                   "scheme": "bearer"}
    operator = [(p, m, o) for p, m, o in _operations(spec) if "operator" in o.get("tags", [])]
    assert len(operator) >= 12
    for path, method, operation in operator:
        assert operation["security"] == [{"bearerAuth": []}], (method, path)
        assert "application/problem+json" in operation["responses"]["401"]["content"]
    default = spec["components"]["responses"]["DEFAULT_ERROR"]["content"]
    assert list(default) == ["application/problem+json"]


def test_one_click_unsubscribe_is_described(spec):
    post = spec["paths"]["/unsubscribe/{token}"]["post"]
    assert "RFC 8058" in post["description"]
    body = post["requestBody"]["content"]
    assert set(body) == {"application/x-www-form-urlencoded", "multipart/form-data"}
    assert body["multipart/form-data"]["example"] == {"List-Unsubscribe": "One-Click"}
    assert "text/html" in post["responses"]["200"]["content"]


# --- schemathesis ------------------------------------------------------------------------

MAX_EXAMPLES = 25
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|"
                       r"\b(?:sqlalchemy|psycopg|werkzeug)\.")
EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]+(?:Error|Exception)\b")


def _without_diagnostics(value: Any) -> Any:
    """The answer minus the outbox rows' ``last_error``: the operator's deliberate record
    of why a delivery failed (``ConnectionRefusedError: …`` is the point there)."""
    if isinstance(value, dict):
        return {k: _without_diagnostics(v) for k, v in value.items() if k != "last_error"}
    if isinstance(value, list):
        return [_without_diagnostics(v) for v in value]
    return value


def no_traceback(ctx: Any, response: Any, case: Any) -> None:
    """No answer shows a traceback, a source line or an exception class name."""
    if (response.headers.get("content-type") or [""])[0] == "application/pdf":
        return  # the proof's PDF: binary, and its text is the proof (tests/privacy/test_document.py)
    text = response.text or ""
    found = TRACEBACK.search(text)
    if found is None and "json" in (response.headers.get("content-type") or [""])[0]:
        text = json.dumps(_without_diagnostics(json.loads(text)))  # headers: lowercase keys
    if found is None:  # a name the request itself sent (and an error echoes) is no leak
        sent = str([case.path_parameters, case.query, case.body])
        found = next((m for m in EXCEPTION_NAME.finditer(text) if m.group(0) not in sent), None)
    if found:
        raise AssertionError(f"the answer leaks internals: {found.group(0)!r}")


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, no_traceback]


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory, smtp_server) -> Iterator[Flask]:
    """One app for the whole run, with a list, a confirmed subscriber, an unsubscribed
    one and a dead letter, so the fuzzer's example values reach real records."""
    tmp = tmp_path_factory.mktemp("fuzz")
    app = build_app(make_config(tmp, OPTIN_MAIL_URL=smtp_server.url))
    client = app.test_client()
    with app.app_context():
        mailing_list = lists.create_list("newsletter", "Example Newsletter", default_locale="de",
                                         redirect_urls=["https://www.example.com/danke"])
        for locale, text in lists.DEMO_TEXTS.items():
            lists.add_consent_text(mailing_list, locale, text)
    smtp_server.mailbox.clear()
    for address in ("anna@example.org", "bob@example.org"):
        signup(client, address, first_name="Anna")
        deliver(app)
        client.post(links(smtp_server.mailbox.to(address)[-1])["confirm"])
        deliver(app)
    client.post(links(smtp_server.mailbox.to("bob@example.org")[-1])["unsubscribe"])
    with app.app_context():

        db.session.add(OutboxItem.pending("no_such_kind"))  # becomes a dead letter
        db.session.commit()
    deliver(app)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: Flask) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzzed_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case):
    """Generated requests, as anyone would send them; operator and webhook routes also
    with valid credentials, so the fuzzer gets past authentication."""
    case.call_and_validate(checks=CHECKS)
    if case.operation.tags and "operator" in case.operation.tags:
        case.call_and_validate(headers=AUTH, checks=CHECKS)
    if case.path == "/webhooks/activecampaign":
        case.query = {**(case.query or {}), "secret": WEBHOOK_SECRET}
        case.call_and_validate(checks=CHECKS)


# Inputs earlier runs found answering 500 on PostgreSQL (NUL bytes, ids beyond the column).
HOSTILE = [
    ("GET", "/v1/lists/%00", None, 404),
    ("GET", "/v1/lists/%00/consent-texts", None, 404),
    ("GET", "/v1/contacts/proof?email=a@example.org&list=%00", None, 404),
    ("GET", "/v1/contacts/receipt?email=a@example.org&list=x%00", None, 404),
    ("GET", "/thanks?list=%00", None, 200),
    ("POST", "/v1/outbox/99999999999999999999999/retry", None, 404),
    ("POST", "/v1/subscriptions", {"email": "a@example.org", "list": "news\x00letter",
                                   "consent_text_version": "1"}, 422),
    ("POST", f"/webhooks/activecampaign?secret={WEBHOOK_SECRET}",
     {"type": "unsubscribe", "contact[email]": "anna@example.org",
      "list": "99999999999999999999999"}, 200),
]


@pytest.mark.parametrize(("method", "path", "form", "status"), HOSTILE)
def test_hostile_input_is_refused_not_a_server_error(client, newsletter, method, path, form,
                                                      status):
    response = client.open(path, method=method, data=form, headers=AUTH)
    assert response.status_code == status


def _examples(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    for path, method, operation in _operations(spec):
        media = [(f"{method} {path} request {ct}", m) for ct, m in
                 operation.get("requestBody", {}).get("content", {}).items()]
        media += [(f"{method} {path} {status} {ct}", m)
                  for status, response in operation["responses"].items()
                  for ct, m in response.get("content", {}).items()]
        for where, m in media:
            if "example" in m and "schema" in m:
                yield where, m["schema"], m["example"]


def test_examples_match_their_schemas(spec):
    from openapi_schema_validator import OAS30Validator

    checked = 0
    for where, schema, example in _examples(spec):
        errors = list(OAS30Validator({**schema, "components": spec["components"]})
                      .iter_errors(example))
        assert errors == [], (where, [e.message for e in errors])
        checked += 1
    assert checked >= 10


# Answers the fuzzer rarely meets (its app's limits are high), checked against the document.
LIMITED = [("/confirm/{token}", "GET"), ("/confirm/{token}", "POST"),
           ("/confirm/{token}/resend", "POST"), ("/unsubscribe/{token}", "GET"),
           ("/unsubscribe/{token}", "POST")]


@pytest.fixture
def limited_schema(tmp_path, smtp_server) -> Any:
    app = build_app(make_config(tmp_path, OPTIN_MAIL_URL=smtp_server.url,
                                OPTIN_RATELIMIT_LINKS="1/minute", OPTIN_RATELIMIT_SIGNUP="1/minute"))
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    with app.app_context():
        db.engine.dispose()


FORM = "application/x-www-form-urlencoded"
BODIES = {"/v1/subscriptions": {"email": "a@example.org", "list": "newsletter",
                                "consent_text_version": 1},
          "/unsubscribe/{token}": {"List-Unsubscribe": "One-Click"}}


@pytest.mark.parametrize("accept", ["text/html", "application/json", "*/*"])
def test_a_429_is_answered_as_documented(limited_schema, accept, limit_window):
    for path, method in [*LIMITED, ("/v1/subscriptions", "POST")]:
        body = BODIES.get(path) if method == "POST" else None
        case = limited_schema[path][method].Case(
            path_parameters={"token": "not-a-token"} if "{token}" in path else None,
            headers={"Accept": accept}, **({"body": body, "media_type": FORM} if body else {}))
        answers = [case.call() for _ in range(2)]
        assert answers[-1].status_code == 429, (method, path)
        for answer in answers:
            case.validate_response(answer, checks=CHECKS)
