"""What a hostile tester threw at the public routes (issue 13): bytes the database cannot
hold, and forwarded addresses that are not addresses. Nothing of it may fail a write."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from webargs import fields
from werkzeug.exceptions import BadRequest

from optin.extensions import db
from optin.models import ConsentEvent, Subscription
from optin.ops.requestjson import Blueprint

from ..conftest import make_config, signup

ADA = "ada@example.org"
SECRET = "webhook-secret-0123456789"  # conftest's OPTIN_AC_WEBHOOK_SECRET
URL = f"/webhooks/activecampaign?secret={SECRET}"


def _webhook(type_: str, **extra: str) -> dict[str, str]:
    return {"type": type_, "date_time": datetime.now(UTC).isoformat(timespec="seconds"),
            "initiated_by": "contact", "initiated_from": "public", "list": "1",
            "contact[id]": "42", "contact[email]": ADA, **extra}


def _subscription(app, address: str = ADA) -> Subscription:
    with app.app_context():
        sub = db.session.scalar(select(Subscription).where(Subscription.email_hash.is_not(None))
                                .order_by(Subscription.id.desc()))
        db.session.expunge(sub)
        return sub


def _event(app, kind: str) -> ConsentEvent:
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent).where(ConsentEvent.kind == kind))
        db.session.expunge(event)
        return event


@pytest.mark.parametrize(("type_", "field", "key", "kind"), [
    ("unsubscribe", "unsubscribe[reason]", "reason", "unsubscribed"),
    ("spam", "campaign[id]", "ac_campaign_id", "complaint"),
    ("bounce", "bounce[description]", "bounce_description", "bounced"),
])
def test_a_nul_byte_in_a_webhook_never_loses_the_event(ac_newsletter, confirmed, ac_app, client,
                                                       runner, type_, field, key, kind):
    confirmed(ADA)
    response = client.post(URL, data=_webhook(type_, **{field: "a\x00b\x07c\td"}))

    assert response.status_code == 200
    event = _event(ac_app, kind)
    # The evidence is kept, minus what no database can store (a tab is fine).
    assert event.details[key] == "abc\td"
    if kind != "bounced":
        assert _subscription(ac_app).status == "unsubscribed"
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0


@pytest.fixture
def app_config(tmp_path, smtp_server):
    # One trusted proxy: the client IP comes from X-Forwarded-For, which a client can fill.
    return make_config(tmp_path, OPTIN_MAIL_URL=smtp_server.url, OPTIN_TRUSTED_PROXIES="1")


@pytest.mark.parametrize("forwarded", ["A" * 50, "not-an-ip", "203.0.113.7, evil"])
def test_a_forwarded_value_that_is_not_an_ip_is_not_recorded_as_one(app, client, newsletter,
                                                                    forwarded):
    response = client.post("/v1/subscriptions", json={
        "email": ADA, "list": "newsletter", "consent_text_version": 1},
        headers={"X-Forwarded-For": forwarded, "User-Agent": "Mozilla/5.0 (proxy test)"})

    assert response.status_code == 202
    event = _event(app, "signup_requested")
    assert event.ip in (None, "203.0.113.7")  # the last hop is the one the proxy vouches for
    assert event.ip is None or forwarded.endswith("203.0.113.7")


def test_a_real_forwarded_ip_is_recorded(app, client, newsletter):
    signup(client, ADA)  # no header: the test client's own address
    assert client.post("/v1/subscriptions", json={
        "email": "bob@example.org", "list": "newsletter", "consent_text_version": 1},
        headers={"X-Forwarded-For": "2001:db8::1"}).status_code == 202
    with app.app_context():
        ips = db.session.scalars(select(ConsentEvent.ip).where(
            ConsentEvent.kind == "signup_requested").order_by(ConsentEvent.id)).all()
    assert ips == ["127.0.0.1", "2001:db8::1"]


# --- bodies no route can use: refused before any route sees them (5a) ---------------------

DEEP = ["[" * 5000 + "]" * 5000, '{"a":' * 10_000, '{"email": ' + "[" * 100 + "]" * 100 + "}"]


@pytest.mark.parametrize("body", DEEP, ids=["arrays", "objects", "a field"])
def test_deeply_nested_json_is_a_bad_request(client, newsletter, body):
    response = client.post("/v1/subscriptions", data=body, content_type="application/json",
                           headers={"Origin": "https://www.example.com"})

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert "nested too deeply" in response.json["detail"]


@pytest.mark.parametrize("body", ['{"email": NaN}', '{"email": -Infinity}', "{not json"])
def test_json_beyond_the_standard_is_a_bad_request(client, newsletter, body):
    response = client.post("/v1/subscriptions", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json["detail"].startswith("The body is not valid JSON")


@pytest.mark.parametrize("body", [DEEP[0], '{"a": NaN}'])
def test_route_arguments_read_json_by_the_same_rules(app, body):
    """flask-smorest's ``@bp.arguments`` (webargs) read JSON through the app's own rules
    (no route takes a JSON body through them yet; one that does is covered)."""
    parser = Blueprint.ARGUMENTS_PARSER
    request = app.test_request_context("/", method="POST", data=body,
                                       content_type="application/json")
    with request, pytest.raises(BadRequest) as refused:
        parser.parse({"a": fields.Raw()}, location="json")
    assert refused.value.code == 400


# --- text the evidence hash could not match once stored (5b) -------------------------------

SIGNUP = {"email": ADA, "list": "newsletter", "consent_text_version": 1}


@pytest.mark.parametrize(("extra", "field"), [
    ({"first_name": "A\ud800B"}, "first_name"),
    ({"last_name": "\udfffB"}, "last_name"),
    ({"fields": {"company": "A\udc00B"}}, "fields"),
    ({"fields": {"comp\ud800any": "ACME"}}, "fields"),
    ({"source_url": "https://www.example.com/\ud800"}, "source_url"),
    ({"redirect_url": "https://www.example.com/danke\ud800"}, "redirect_url"),
    ({"email": "a\ud800@example.org"}, "email"),
    ({"list": "news\ud800letter"}, "list"),
])
def test_a_lone_surrogate_is_refused_naming_the_field(app, client, newsletter, extra, field):
    response = client.post("/v1/subscriptions", json={**SIGNUP, **extra})

    assert response.status_code == 422
    assert field in response.json["errors"]
    with app.app_context():
        assert db.session.scalar(select(Subscription)) is None


def test_a_character_beyond_the_basic_plane_is_text_like_any_other(app, client, newsletter):
    response = client.post("/v1/subscriptions", json={**SIGNUP, "first_name": "Ann\U0001F600"})

    assert response.status_code == 202
    assert _subscription(app).first_name == "Ann\U0001F600"


# --- the consent text version is a whole number (6) ----------------------------------------


@pytest.mark.parametrize("version", [1.5, 1.0, True, "1.5", "١", int("9" * 30), "9" * 5000])
def test_a_version_that_is_not_a_whole_number_is_refused_naming_it(app, client, newsletter,
                                                                   version):
    response = client.post("/v1/subscriptions", json={**SIGNUP, "consent_text_version": version})

    assert response.status_code == 422
    assert list(response.json["errors"]) == ["consent_text_version"]


def test_a_five_thousand_digit_version_is_refused_naming_it(app, client, newsletter):
    body = '{"email": "ada@example.org", "list": "newsletter", "consent_text_version": %s}'
    response = client.post("/v1/subscriptions", data=body % ("9" * 5000),
                           content_type="application/json")

    assert response.status_code == 422
    assert list(response.json["errors"]) == ["consent_text_version"]


@pytest.mark.parametrize("version", [1, "1", " 1 "])
def test_a_whole_number_version_is_accepted_from_json_and_forms(client, newsletter, version):
    assert client.post("/v1/subscriptions",
                       json={**SIGNUP, "consent_text_version": version}).status_code == 202
    form = client.post("/v1/subscriptions", data={**SIGNUP, "consent_text_version": str(version)},
                       headers={"Accept": "text/html"})
    assert form.status_code == 303
