"""Cross-origin signups: ``fetch()`` from a list's origins (CORS, preflight included), the
``Origin`` check that refuses other pages, and plain form posts from allowed pages.

The ``newsletter`` fixture has the origin https://www.example.com and the thank-you URL
https://www.example.com/danke; the service runs at http://newsletter.test.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from optin import create_app
from optin.consent import lists
from optin.extensions import db
from optin.models import OutboxItem, Subscription

ALLOWED = "https://www.example.com"


def _stored(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Subscription))


def _preflight(client, origin: str, headers: str = "content-type"):
    return client.options("/v1/subscriptions", headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers,
    })


def _fetch(client, origin: str, slug: str = "newsletter", address: str = "anna@example.org"):
    """What ``fetch(url, {method: "POST", body: JSON.stringify(...)})`` sends."""
    return client.post("/v1/subscriptions", json={
        "email": address, "list": slug, "consent_text_version": 1,
    }, headers={"Origin": origin})


def _form(client, origin: str | None, **extra: str):
    """A plain HTML form post (no JavaScript), as a browser sends it."""
    headers = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    if origin is not None:
        headers["Origin"] = origin
    return client.post("/v1/subscriptions", data={
        "email": "anna@example.org", "list": "newsletter", "consent_text_version": "1", **extra,
    }, headers=headers)


# --- preflight ----------------------------------------------------------------------------------


def test_preflight_from_a_lists_origin_is_allowed(client, newsletter):
    response = _preflight(client, ALLOWED)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"].lower() == "content-type"
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers.get_all("Vary")[0]


def test_preflight_allows_the_origins_of_every_list(app, client, newsletter):
    with app.app_context():
        lists.create_list("shop", "Shop news", origins=["https://shop.example.net"])
    assert _preflight(client, "https://shop.example.net").headers[
        "Access-Control-Allow-Origin"] == "https://shop.example.net"
    assert _preflight(client, ALLOWED).headers["Access-Control-Allow-Origin"] == ALLOWED


@pytest.mark.parametrize("origin", ["https://evil.example", "https://www.example.com.evil.example",
                                    "http://www.example.com", "null"])
def test_preflight_from_an_unknown_origin_gets_no_cors_headers(client, newsletter, origin):
    response = _preflight(client, origin)
    assert not [h for h, _ in response.headers.items() if h.startswith("Access-Control-")]
    assert "Origin" in response.headers["Vary"]


def test_preflight_asking_for_other_headers_gets_only_the_allowed_ones(client, newsletter):
    response = _preflight(client, ALLOWED, headers="content-type, x-api-key")
    assert response.headers["Access-Control-Allow-Headers"].lower() == "content-type"


# --- fetch() POST -------------------------------------------------------------------------------


def test_json_post_from_a_lists_origin_is_readable(app, client, newsletter):
    response = _fetch(client, ALLOWED)
    assert response.status_code == 202
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in response.headers["Vary"]
    assert _stored(app) == 1


def test_field_errors_are_readable_by_a_lists_origin(client, newsletter):
    response = client.post("/v1/subscriptions", data={
        "email": "anna@invalid", "list": "newsletter", "consent_text_version": "1",
    }, headers={"Origin": ALLOWED, "Accept": "application/json"})
    assert response.status_code == 422
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert list(response.get_json()["errors"]) == ["email"]


def test_a_post_from_an_unknown_origin_is_refused_and_stores_nothing(app, client, newsletter):
    response = _fetch(client, "https://evil.example")
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert "nothing was stored" in response.get_json()["detail"]
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]
    assert _stored(app) == 0
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OutboxItem)) == 0


def test_another_lists_origin_may_not_post_for_this_list(app, client, newsletter):
    with app.app_context():
        lists.create_list("shop", "Shop news", origins=["https://shop.example.net"])
    # The preflight allows it (it cannot know the list), the POST does not.
    assert _preflight(client, "https://shop.example.net").headers["Access-Control-Allow-Origin"]
    response = _fetch(client, "https://shop.example.net")
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert _stored(app) == 0


def test_an_unknown_list_gets_no_cors_header(client, newsletter):
    response = _fetch(client, ALLOWED, slug="nope")
    assert response.status_code == 422
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_429_is_readable_by_a_lists_origin(app_config, newsletter, app, limit_window):
    app_config["OPTIN_RATELIMIT_SIGNUP"] = "1/minute"
    limited = create_app(app_config).test_client()
    assert _fetch(limited, ALLOWED).status_code == 202
    response = _fetch(limited, ALLOWED, address="bob@example.org")
    assert response.status_code == 429
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED  # embed.js shows "try later"


# --- plain form posts ---------------------------------------------------------------------------


def test_a_form_post_from_an_allowed_page_works(app, client, newsletter):
    response = _form(client, ALLOWED)
    assert response.status_code == 303
    assert response.headers["Location"] == "https://www.example.com/danke"
    assert _stored(app) == 1


def test_a_form_post_from_a_thank_you_urls_site_works(app, client, newsletter):
    with app.app_context():
        lists.update_list(lists.get_list("newsletter"), origins=[],
                          redirect_urls=["https://landing.example.org/thanks"])
    assert _form(client, "https://landing.example.org").status_code == 303
    assert _stored(app) == 1


def test_a_form_post_from_the_services_own_pages_works(app, client, newsletter):
    assert _form(client, "http://newsletter.test").status_code == 303
    assert _stored(app) == 1


def test_a_form_post_without_origin_works(app, client, newsletter):
    response = _form(client, None)
    assert response.status_code == 303
    assert _stored(app) == 1


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
def test_a_form_post_from_another_page_gets_the_friendly_page(app, client, newsletter, origin):
    response = _form(client, origin, locale="de")
    assert response.status_code == 403
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "Anmeldung von dieser Seite nicht möglich" in page
    assert _stored(app) == 0


def test_the_origin_check_ignores_case(app, client, newsletter):
    assert _form(client, "HTTPS://WWW.EXAMPLE.COM").status_code == 303


def test_in_development_the_demo_page_on_any_loopback_origin_may_post(app_config, newsletter, app):
    dev = create_app({**app_config, "OPTIN_ENV": "development"}).test_client()
    response = _fetch(dev, "http://127.0.0.1:8123")
    assert response.status_code == 202
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8123"
    assert _form(dev, "http://localhost:8000").status_code == 303
    assert _form(dev, "null").status_code == 303  # the README's form saved as a local file
    assert _fetch(dev, "http://localhost.evil.example").status_code == 403
    # Production allows loopback pages only when a list names them.
    assert _fetch(app.test_client(), "http://127.0.0.1:8123").status_code == 403
