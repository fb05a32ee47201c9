"""POST /v1/subscriptions: validation, enumeration safety, honeypot, redirects, throttling."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from optin.extensions import db
from optin.models import ConsentEvent, OutboxItem, Subscription
from optin.web.subscribe import ACCEPTED

from ..conftest import deliver, signup


def _counts(app) -> tuple[int, int, int]:
    with app.app_context():
        return (
            db.session.scalar(select(func.count()).select_from(Subscription)),
            db.session.scalar(select(func.count()).select_from(ConsentEvent)),
            db.session.scalar(select(func.count()).select_from(OutboxItem)),
        )


def _shape(response) -> tuple:
    # X-Request-ID is random per request, whoever asks.
    headers = {k: v for k, v in response.headers.items()
               if k not in {"Date", "Content-Length", "X-Request-ID"}}
    return response.status_code, response.get_data(), sorted(headers.items())


def test_response_is_identical_for_every_address_state(app, client, newsletter, confirmed,
                                                        signed_up, mailbox):
    unsubscribe_path = confirmed("confirmed@example.org")
    signed_up("pending@example.org")
    gone = confirmed("gone@example.org")
    assert client.post(gone).status_code == 303
    del unsubscribe_path

    shapes = {
        state: _shape(signup(client, address))
        for state, address in {
            "new": "new@example.org",
            "pending": "pending@example.org",
            "confirmed": "confirmed@example.org",
            "unsubscribed": "gone@example.org",
        }.items()
    }
    assert shapes["new"][0] == 202
    assert len({repr(s) for s in shapes.values()}) == 1, shapes


def test_form_posts_look_identical_too(app, client, newsletter, confirmed):
    confirmed("known@example.org")
    answers = [
        client.post("/v1/subscriptions", data={"email": a, "list": "newsletter",
                                               "consent_text_version": "1"},
                    headers={"Accept": "text/html"})
        for a in ("known@example.org", "unknown@example.org")
    ]
    assert [r.status_code for r in answers] == [303, 303]
    assert answers[0].headers["Location"] == answers[1].headers["Location"]


def test_signup_stores_the_evidence(app, client, newsletter):
    response = client.post("/v1/subscriptions", json={
        "email": "  Bert@Example.ORG ", "list": "newsletter", "consent_text_version": 1,
        "locale": "en", "first_name": "Bert", "fields": {"company": "ACME"},
        "source_url": "https://www.example.com/landing",
    }, headers={"User-Agent": "UA/1.0"}, environ_base={"REMOTE_ADDR": "192.0.2.44"})
    assert response.status_code == 202
    assert response.is_json and response.json["status"] == "accepted"
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        assert sub.email == "Bert@example.org"  # domain normalized, local part kept
        assert sub.status == "pending" and sub.locale == "en"
        assert sub.consent_text.locale == "en" and sub.consent_text.version == 1
        assert sub.fields == {"company": "ACME"}
        [event] = sub.events
        assert event.kind == "signup_requested"
        assert (event.ip, event.user_agent) == ("192.0.2.44", "UA/1.0")
        assert event.details["consent_text_sha256"] == sub.consent_text.sha256
        assert event.details["source_url"] == "https://www.example.com/landing"
        assert event.details["fields_entered"] == ["company", "first_name"]


def test_case_variants_are_one_subscription(app, client, newsletter):
    first = signup(client, "carla@example.org")
    again = signup(client, "CARLA@example.org")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json == again.json == ACCEPTED
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Subscription)) == 1
        kinds = db.session.scalars(select(ConsentEvent.kind).order_by(ConsentEvent.id)).all()
    assert kinds == ["signup_requested", "signup_repeated"]


def test_filled_honeypot_is_accepted_and_dropped(app, client, newsletter):
    response = signup(client, "bot@example.org", website="http://spam.example")
    assert response.status_code == 202
    assert response.json == signup(client, "human@example.org").json
    with app.app_context():
        emails = db.session.scalars(select(Subscription.email)).all()
    assert emails == ["human@example.org"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"list": "newsletter", "consent_text_version": 1}, "email"),
        ({"email": "a@example.org", "consent_text_version": 1}, "list"),
        ({"email": "a@example.org", "list": "newsletter"}, "consent_text_version"),
        ({"email": "x" * 10_000 + "@example.org", "list": "newsletter",
          "consent_text_version": 1}, "email"),
        ({"email": "not an address", "list": "newsletter", "consent_text_version": 1}, "email"),
        ({"email": 12345, "list": "newsletter", "consent_text_version": 1}, "email"),
        ({"email": "a\x00b@example.org", "list": "newsletter", "consent_text_version": 1},
         "email"),
        ({"email": "a@example.org", "list": "newsletter", "consent_text_version": 1,
          "fields": {"company": "AC\x00ME"}}, "fields"),
        ({"email": "a@example.org", "list": ["newsletter"], "consent_text_version": 1}, "list"),
        ({"email": "a@example.org", "list": "newsletter", "consent_text_version": "one"},
         "consent_text_version"),
        ({"email": "a@example.org", "list": "no-such-list", "consent_text_version": 1}, "list"),
        ({"email": "a@example.org", "list": "newsletter", "consent_text_version": 9},
         "consent_text_version"),
        ({"email": "a@example.org", "list": "newsletter", "consent_text_version": 1,
          "locale": "fr"}, "locale"),
        ({"email": "a@example.org", "list": "newsletter", "consent_text_version": 1,
          "first_name": "x" * 500}, "first_name"),
    ],
)
def test_bad_input_gets_a_problem_and_stores_nothing(app, client, newsletter, body, field):
    before = _counts(app)
    response = client.post("/v1/subscriptions", json=body)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = response.json
    assert problem["status"] == 422 and problem["title"]
    assert field in problem["errors"], problem
    assert all(isinstance(m, str) for m in problem["errors"][field])
    assert _counts(app) == before


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        ("email=a@example.org", "text/plain", 415),
        ("<signup/>", "application/xml", 415),
        ("{not json", "application/json", 400),
        ('["a list"]', "application/json", 400),
    ],
)
def test_wrong_content_types_and_broken_json(app, client, newsletter, data, content_type, status):
    before = _counts(app)
    response = client.post("/v1/subscriptions", data=data, content_type=content_type)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert "Traceback" not in response.get_data(as_text=True)
    assert _counts(app) == before


def test_oversized_body_is_refused(app, client, newsletter):
    response = client.post("/v1/subscriptions", data="x" * 100_000, content_type="application/json")
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"


def test_browser_form_errors_get_a_friendly_page(app, client, newsletter):
    response = client.post("/v1/subscriptions", data={"email": "nope", "list": "newsletter",
                                                      "consent_text_version": "1"},
                           headers={"Accept": "text/html,*/*;q=0.8", "Accept-Language": "en"})
    assert response.status_code == 422
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "email" in page and "<html" in page
    assert _counts(app) == (0, 0, 0)


def test_form_post_redirects_only_to_allowed_urls(app, client, newsletter):
    def post(**extra):
        return client.post("/v1/subscriptions", data={
            "email": "d@example.org", "list": "newsletter", "consent_text_version": "1", **extra,
        }, headers={"Accept": "text/html"})

    assert post(redirect_url="https://www.example.com/danke").headers["Location"] == (
        "https://www.example.com/danke"
    )
    # Not on the allow-list: our own thank-you page, never the foreign URL.
    location = post(redirect_url="https://evil.example/phish").headers["Location"]
    assert location.startswith("/thanks")
    page = client.get(location, headers={"Accept-Language": "de"})
    assert page.status_code == 200 and "evil" not in page.get_data(as_text=True)
    # Nothing asked: the list's own thank-you page.
    assert post().headers["Location"] == "https://www.example.com/danke"


def test_form_fields_map_into_custom_fields(app, client, newsletter):
    client.post("/v1/subscriptions", data={
        "email": "e@example.org", "list": "newsletter", "consent_text_version": "1",
        "fields[company]": "ACME", "fields[role]": "CTO",
    })
    with app.app_context():
        assert db.session.scalar(select(Subscription.fields)) == {"company": "ACME", "role": "CTO"}


def test_repeated_signups_mail_at_most_once_per_interval(app, client, newsletter, mailbox):
    for _ in range(5):
        assert signup(client, "f@example.org").status_code == 202
    deliver(app)
    assert len(mailbox.to("f@example.org")) == 1
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        kinds = [e.kind for e in sub.events]
        assert kinds.count("signup_repeated") == 4
        # Pretend the interval has passed: the next signup mails again.
        from datetime import timedelta

        sub.last_mail_requested_at -= timedelta(minutes=16)
        db.session.commit()
    signup(client, "f@example.org")
    deliver(app)
    assert len(mailbox.to("f@example.org")) == 2


def test_confirmed_address_signing_up_again_gets_no_mail(app, client, confirmed, mailbox):
    confirmed("g@example.org")
    before = len(mailbox.to("g@example.org"))
    assert signup(client, "g@example.org").status_code == 202
    deliver(app)
    assert len(mailbox.to("g@example.org")) == before
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        assert sub.status == "confirmed"
        assert sub.events[-1].kind == "signup_repeated"
        assert sub.events[-1].details["action"] == "none (already confirmed)"
        rows = db.session.execute(select(OutboxItem.kind, OutboxItem.status)
                                  .where(OutboxItem.kind.not_in(("signup_intake",
                                                                 "confirm_intake")))).all()
    # Nothing new was queued, and what the confirmation queued was delivered, not crashed.
    assert sorted(tuple(r) for r in rows) == [("ac_subscribe", "done"), ("confirm_mail", "done"),
                                              ("welcome_mail", "done")]


def test_signup_after_unsubscribe_starts_a_fresh_double_opt_in(app, client, confirmed, mailbox):
    unsubscribe_path = confirmed("h@example.org")
    client.post(unsubscribe_path)
    signup(client, "h@example.org")
    deliver(app)
    with app.app_context():
        statuses = db.session.scalars(select(Subscription.status).order_by(Subscription.id)).all()
    assert statuses == ["unsubscribed", "pending"]
    assert "confirm" in mailbox.to("h@example.org")[-1].get_body(("plain",)).get_content()


def test_unexpected_errors_are_problems_without_traceback(app, client, newsletter, monkeypatch):
    from optin.consent import intake

    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(intake, "accept", explode)
    response = signup(client, "z@example.org")
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert response.json["title"] == "Internal Server Error"
    assert "secret internals" not in response.get_data(as_text=True)
    page = client.post("/v1/subscriptions", data={"email": "z@example.org", "list": "newsletter",
                                                  "consent_text_version": "1"},
                       headers={"Accept": "text/html"})
    assert page.status_code == 500 and page.mimetype == "text/html"
    assert "secret internals" not in page.get_data(as_text=True)
