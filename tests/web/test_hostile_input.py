"""What a hostile tester threw at the public routes (issue 13): bytes the database cannot
hold, and forwarded addresses that are not addresses. Nothing of it may fail a write."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from optin.extensions import db
from optin.models import ConsentEvent, Subscription

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
