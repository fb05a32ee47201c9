"""Each signup keeps the privacy policy in force when it was made, and the page it came from
(the Referer when the form sent none)."""

from __future__ import annotations

from datetime import timedelta

from flask.testing import FlaskClient

from optin.consent import lists
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import MailingList, utcnow

from ..conftest import ADMIN_TOKEN, retention_at

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROOF = "/v1/contacts/proof?email={}&list=newsletter"
OLD_POLICY = "https://www.example.com/datenschutz-2025"
NEW_POLICY = "https://www.example.com/datenschutz-2026"


def _policy(app, newsletter, url: str) -> None:
    with app.app_context():
        lists.update_list(db.session.get(MailingList, newsletter["id"]), privacy_policy_url=url)


def _form_post(client, address: str, **headers: str):
    return client.post("/v1/subscriptions", data={
        "email": address, "list": "newsletter", "consent_text_version": "1", "locale": "de",
        "source_url": ""}, headers={"Accept": "text/html", **headers})


def _signups(client, address: str) -> list[dict]:
    return client.get(PROOF.format(address), headers=AUTH).json["consents"][0]["signups"]


def test_the_privacy_policy_of_the_day_of_the_signup_is_recorded(app, client, runner, newsletter):
    _policy(app, newsletter, OLD_POLICY)
    assert _form_post(client, "anna@example.org").status_code == 303
    _policy(app, newsletter, NEW_POLICY)
    assert _form_post(client, "anna@example.org").status_code == 303
    first, again = _signups(client, "anna@example.org")
    assert (first["privacy_policy_url"], again["privacy_policy_url"]) == (OLD_POLICY, NEW_POLICY)
    # Not personal data: it outlives minimization.
    later = (utcnow() + timedelta(days=30)).isoformat()
    assert retention_at(app, runner, later).exit_code == 0
    first, again = _signups(client, "anna@example.org")
    assert first["redacted_at"] and first["privacy_policy_url"] == OLD_POLICY


def test_a_form_without_a_source_url_records_the_referer(app, client, newsletter):
    page = "https://www.example.com/newsletter?utm=1"
    assert _form_post(client, "anna@example.org", Referer=page).status_code == 303
    [signup] = _signups(client, "anna@example.org")
    assert (signup["source_url"], signup["source_url_from"]) == (page, "referer")


def test_the_source_url_the_form_sent_wins_over_the_referer(app, client, newsletter):
    response = client.post("/v1/subscriptions", json={
        "email": "ben@example.org", "list": "newsletter", "consent_text_version": 1,
        "source_url": "https://www.example.com/landing"},
        headers={"Referer": "https://www.example.com/other"})
    assert response.status_code == 202
    [signup] = _signups(client, "ben@example.org")
    assert (signup["source_url"], signup["source_url_from"]) == (
        "https://www.example.com/landing", "form")


def test_a_referer_that_is_no_page_is_not_recorded(app, client, newsletter):
    for n, referer in enumerate(("android-app://com.example", "javascript:alert(1)")):
        assert _form_post(client, f"c{n}@example.org", Referer=referer).status_code == 303
        [signup] = _signups(client, f"c{n}@example.org")
        assert not signup["source_url"] and signup["source_url_from"] is None
    # Nor can a client claim the Referer as its source: the field is not part of a signup.
    assert client.post("/v1/subscriptions", json={
        "email": "d@example.org", "list": "newsletter", "consent_text_version": 1,
        "source_url_from": "referer"}).status_code == 202
    [signup] = _signups(client, "d@example.org")
    assert signup["source_url_from"] is None


def test_a_signup_queued_before_a_policy_change_keeps_the_policy_it_was_shown(
        app, client, runner, newsletter):
    """The worker processes a signup after the request (the intake): a new privacy policy
    set meanwhile (``optin lists update``) is not the one the visitor's form linked. A new
    address (set-based in the intake group) and a repeat (row by row) alike."""
    _policy(app, newsletter, OLD_POLICY)
    assert _form_post(client, "anna@example.org").status_code == 303  # settled: a repeat next
    raw = FlaskClient(app, app.response_class)
    for address in ("anna@example.org", "ben@example.org"):
        assert _form_post(raw, address).status_code == 303  # queued, not yet processed
    assert runner.invoke(args=["lists", "update", "newsletter",
                               "--privacy-policy-url", NEW_POLICY]).exit_code == 0
    with app.app_context():
        Worker(app, threads=1).drain()
    assert [s["privacy_policy_url"] for s in _signups(client, "anna@example.org")] == [
        OLD_POLICY, OLD_POLICY]
    assert [s["privacy_policy_url"] for s in _signups(client, "ben@example.org")] == [OLD_POLICY]
    assert _form_post(client, "cleo@example.org").status_code == 303  # after it: the new one
    assert [s["privacy_policy_url"] for s in _signups(client, "cleo@example.org")] == [NEW_POLICY]
