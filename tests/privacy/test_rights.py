"""Access, portability and erasure through the operator API, as an operator uses them."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from optin.consent.lapse import proof_lapses_at
from optin.extensions import db
from optin.models import ConsentEvent, OutboxItem, Subscription, utcnow

from ..conftest import ADMIN_TOKEN, deliver, retention_at

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ANNA = {"first_name": "Anna", "last_name": "Aalto", "fields": {"company": "Aalto GmbH"},
        "source_url": "https://www.example.com/landing"}


def export(client, address="anna@example.org"):
    response = client.get(f"/v1/contacts?email={address}", headers=AUTH)
    assert response.status_code == 200
    return response.json


def test_access_exports_everything_stored(app, client, confirmed):
    confirmed("anna@example.org", **ANNA)
    body = export(client, "ANNA@example.org")
    assert body["address"] == "ANNA@example.org"  # as given, normalized domain
    [sub] = body["subscriptions"]
    assert sub["email"] == "anna@example.org"
    assert (sub["first_name"], sub["last_name"]) == ("Anna", "Aalto")
    assert sub["fields"] == {"company": "Aalto GmbH"}
    assert sub["source_url"] == "https://www.example.com/landing"
    assert sub["status"] == "confirmed" and sub["confirmed_at"]
    kinds = [e["kind"] for e in sub["events"]]
    assert kinds[:3] == ["signup_requested", "confirmation_sent", "confirmed"]
    assert kinds[-1] == "accessed"  # the export shows its own request
    confirmed_event = sub["events"][2]
    assert confirmed_event["ip"] == "203.0.113.7"
    assert confirmed_event["consent_text_id"] == sub["consent_text_id"]
    [text] = body["consent_texts"]
    assert text["id"] == sub["consent_text_id"] and text["text"].startswith("Ja, ich möchte")
    assert body["suppressions"] == []
    assert "nonce" not in sub  # a link secret, not data about the person


def test_access_for_an_unknown_address_says_nothing_is_stored(client, app):
    body = export(client, "nobody@example.org")
    assert body["subscriptions"] == [] and body["consent_texts"] == []


def test_erasure_deletes_now_keeps_proof_until_it_lapses(app, client, runner, confirmed):
    confirmed("anna@example.org", **ANNA)
    response = client.delete("/v1/contacts?email=anna@example.org", headers=AUTH)
    assert response.status_code == 200
    body = response.json
    expected_lapse = proof_lapses_at(utcnow(), 3).isoformat()
    [result] = body["subscriptions"]
    assert result["status_before"] == "confirmed" and result["status"] == "unsubscribed"
    assert result["deleted_now"] == ["first_name", "last_name", "fields"]
    assert result["kept_until"] == expected_lapse
    assert "email address" in result["kept"]
    assert body["legal_basis"].startswith("Art. 17(3)(e) GDPR")
    assert expected_lapse in body["detail"]
    assert body["activecampaign"] == "withdrawal queued"

    # The withdrawal goes to ActiveCampaign through the outbox.
    with app.app_context():
        kinds = [i.kind for i in db.session.scalars(select(OutboxItem))]
        assert "ac_unsubscribe" in kinds
    deliver(app)

    after = export(client)
    [sub] = after["subscriptions"]
    # Gone: the personal fields proof does not need.
    assert (sub["first_name"], sub["last_name"], sub["fields"]) == (None, None, None)
    # Kept, and said so: the address and the proof events, until the proof lapses.
    assert sub["email"] == "anna@example.org"
    assert sub["status"] == "unsubscribed" and sub["erased_at"]
    assert sub["withdrawal_origin"] == "operator"
    assert sub["retain_until"] == expected_lapse
    assert "Art. 17(3)(e)" in sub["retention"]
    kinds = [e["kind"] for e in sub["events"]]
    assert "erased" in kinds and "sync_skipped" in kinds
    erased = next(e for e in sub["events"] if e["kind"] == "erased")
    assert erased["origin"] == "operator" and erased["details"]["actor"] == "ops"
    assert [s["list"] for s in after["suppressions"]] == ["newsletter"]

    # When the proof lapses, the retention run leaves only the keyed hash and dates.
    lapse = (proof_lapses_at(utcnow(), 3) + timedelta(seconds=1)).isoformat()
    assert retention_at(app, runner, lapse).exit_code == 0
    final = export(client)
    [sub] = final["subscriptions"]
    assert sub["status"] == "minimized" and sub["email"] is None and sub["source_url"] is None
    assert all(e["ip"] is None and e["user_agent"] is None for e in sub["events"]
               if e["redacted_at"])
    signup_event = sub["events"][0]
    assert "first_name" not in signup_event["details"] and "email" not in signup_event["details"]
    assert [s["list"] for s in final["suppressions"]] == ["newsletter"]
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0


def test_erasure_of_a_pending_signup_and_repeated_erasure(app, client, signed_up, confirmed):
    signed_up("bea@example.org", first_name="Bea")
    first = client.delete("/v1/contacts?email=bea@example.org", headers=AUTH).json
    [result] = first["subscriptions"]
    assert result["status_before"] == "pending" and result["status"] == "unsubscribed"
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        # Never confirmed: kept only as long as any unconfirmed signup (14 days).
        assert abs(sub.retain_until - (sub.created_at + timedelta(days=14))) < timedelta(seconds=1)
        assert sub.first_name is None
    again = client.delete("/v1/contacts?email=bea@example.org", headers=AUTH).json
    assert again["activecampaign"].startswith("nothing to push")
    assert again["subscriptions"][0]["status_before"] == "unsubscribed"
    with app.app_context():
        erased = db.session.scalars(select(ConsentEvent).where(ConsentEvent.kind == "erased")).all()
        assert len(erased) == 2


def test_erasure_covers_every_list(app, client, runner, confirmed):
    assert runner.invoke(args=["lists", "create", "offers", "--name", "Offers"]).exit_code == 0
    assert runner.invoke(args=["consent-texts", "add", "offers", "--locale", "de",
                               "--text", "Ja, Angebote per E-Mail."]).exit_code == 0
    confirmed("anna@example.org")
    assert client.post("/v1/subscriptions", json={"email": "anna@example.org", "list": "offers",
                                                  "consent_text_version": 1}).status_code == 202
    body = client.delete("/v1/contacts?email=anna@example.org", headers=AUTH).json
    assert sorted(s["list"] for s in body["subscriptions"]) == ["newsletter", "offers"]
    assert {s["status"] for s in body["subscriptions"]} == {"unsubscribed"}


def test_erasure_of_an_unknown_address(client, app):
    body = client.delete("/v1/contacts?email=nobody@example.org", headers=AUTH).json
    assert body["found"] is False and body["subscriptions"] == []
    assert body["detail"].startswith("No consent records of this address are stored.")
    assert "do-not-contact" in body["detail"]


def test_an_address_erased_unknown_is_not_added_again_by_an_import(
        app, client, runner, newsletter, confirmed, tmp_path):
    """Erasure of an address optin held nothing about stored nothing: a later import (a
    Mailchimp or CSV export with the person in it, ActiveCampaign's list) added and mailed
    the one who had asked to be erased, and reconcile left them subscribed in
    ActiveCampaign. Now every erasure keeps the keyed hash on every list's do-not-contact
    list, lists made later included; the answer is the same however often it is asked,
    so it tells nothing about whether the address was known; a new confirmed double
    opt-in lifts it on its own list."""
    first = client.delete("/v1/contacts?email=gone@example.org", headers=AUTH).json
    again = client.delete("/v1/contacts?email=gone@example.org", headers=AUTH).json
    assert {k: v for k, v in first.items() if k != "erased_at"} == {
        k: v for k, v in again.items() if k != "erased_at"}
    assert first["found"] is False
    assert runner.invoke(args=["lists", "create", "later", "--name", "Later"]).exit_code == 0
    path = tmp_path / "consents.csv"
    path.write_text("email,status,first_name\ngone@example.org,subscribed,Gone\n"
                    "new@example.org,subscribed,New\n")
    for slug in ("newsletter", "later"):
        result = runner.invoke(args=["import", "csv", str(path), "--list", slug])
        assert result.exit_code == 0, result.output
        assert "suppressed (withdrew here: not re-added): 1" in result.output, result.output
    with app.app_context():
        assert db.session.scalars(select(Subscription.email).where(
            Subscription.email.like("gone%"))).all() == []
    exported = export(client, "gone@example.org")
    assert sorted((s["list"], s["reason"]) for s in exported["suppressions"]) == [
        ("later", "erasure"), ("newsletter", "erasure")]
    confirmed("gone@example.org")  # the person comes back through a double opt-in
    exported = export(client, "gone@example.org")
    assert [s["list"] for s in exported["suppressions"]] == ["later"]


def test_erasure_sends_no_goodbye_mail(app, client, runner, confirmed, mailbox):
    assert runner.invoke(args=["lists", "create", "club", "--name", "Club", "--goodbye"]).exit_code == 0
    assert runner.invoke(args=["consent-texts", "add", "club", "--locale", "de",
                               "--text", "Ja, Club-Post."]).exit_code == 0
    confirmed("anna@example.org")
    assert client.post("/v1/subscriptions", json={"email": "anna@example.org", "list": "club",
                                                  "consent_text_version": 1}).status_code == 202
    deliver(app)
    from ..conftest import links
    club_confirm = links(mailbox.to("anna@example.org")[-1])["confirm"]
    assert client.post(club_confirm).status_code == 303
    deliver(app)
    mailbox.clear()
    assert client.delete("/v1/contacts?email=anna@example.org", headers=AUTH).status_code == 200
    deliver(app)
    assert mailbox.to("anna@example.org") == []
    with app.app_context():  # an ordinary unsubscribe on that list would have sent one
        assert "goodbye_mail" not in [i.kind for i in db.session.scalars(select(OutboxItem))]


def test_erasure_right_after_an_unsubscribe_cancels_its_queued_goodbye_mail(
        app, client, runner, confirmed, mailbox):
    """Unsubscribe, then ask for erasure before the worker ran: the goodbye mail the
    unsubscribe queued is not sent either (the erasure found the subscription already
    withdrawn, and only cancelled goodbyes of active ones)."""
    assert runner.invoke(args=["lists", "create", "club", "--name", "Club", "--goodbye"]).exit_code == 0
    assert runner.invoke(args=["consent-texts", "add", "club", "--locale", "de",
                               "--text", "Ja, Club-Post."]).exit_code == 0
    assert client.post("/v1/subscriptions", json={"email": "bea@example.org", "list": "club",
                                                  "consent_text_version": 1}).status_code == 202
    deliver(app)
    from ..conftest import links
    confirm = links(mailbox.to("bea@example.org")[-1])["confirm"]
    assert client.post(confirm).status_code == 303
    deliver(app)
    unsubscribe = links(mailbox.to("bea@example.org")[-1])["unsubscribe"]
    mailbox.clear()
    assert client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert client.delete("/v1/contacts?email=bea@example.org", headers=AUTH).status_code == 200
    deliver(app)
    assert mailbox.to("bea@example.org") == []
