"""``POST /webhooks/activecampaign``: withdrawals, complaints and bounces from ActiveCampaign,
posted form-encoded the way ActiveCampaign posts them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from optin.consent import lists
from optin.extensions import db
from optin.models import ConsentEvent, MailingList, OutboxItem, Subscription

from ..conftest import build_app, deliver, make_config, wait_for

ADA = "ada@example.org"
SECRET = "webhook-secret-0123456789"  # conftest's OPTIN_AC_WEBHOOK_SECRET
URL = f"/webhooks/activecampaign?secret={SECRET}"
CENTRAL = timezone(timedelta(hours=-5))  # ActiveCampaign reports its account's local time


def _payload(address=ADA, type_="unsubscribe", list_id="1", at=None, **extra) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "type": type_,
        "date_time": at.astimezone(CENTRAL).isoformat(timespec="seconds"),
        "initiated_by": "contact",
        "initiated_from": "public",
        "list": list_id,
        "contact[id]": "42",
        "contact[email]": address,
        "contact[first_name]": "Ada",
        "contact[tags]": "",
        **extra,
    }


def _sub(app, address=ADA) -> Subscription:
    with app.app_context():
        sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
        db.session.expunge(sub)
        return sub


def _whole_second_after(moment: datetime) -> datetime | None:
    """Now in whole seconds, as ActiveCampaign reports times, once that is after ``moment``."""
    now = datetime.now(UTC).replace(microsecond=0)
    return now if now > moment else None


def _events(app, kind) -> list[ConsentEvent]:
    with app.app_context():
        events = list(db.session.scalars(select(ConsentEvent).where(ConsentEvent.kind == kind)))
        db.session.expunge_all()
        return events


def test_an_unsubscribe_in_activecampaign_withdraws_here(ac_newsletter, confirmed, ac_app, client,
                                                         fake_ac, runner):
    confirmed(ADA)
    assert fake_ac.contact_status(ADA, 1) == 1
    confirmed_at = _sub(ac_app).confirmed_at
    # ActiveCampaign's times have whole seconds: report the first one after the confirmation.
    reported = wait_for(lambda: _whole_second_after(confirmed_at), timeout=3)
    calls = len(fake_ac.requests)

    response = client.post(URL, data=_payload(at=reported))

    assert response.status_code == 200
    assert len(fake_ac.requests) == calls  # answered without calling ActiveCampaign
    sub = _sub(ac_app)
    assert sub.status == "unsubscribed" and sub.withdrawal_origin == "activecampaign"
    assert sub.withdrawn_at == reported
    [event] = _events(ac_app, "unsubscribed")
    assert event.origin == "activecampaign" and event.at == reported
    assert event.details["initiated_from"] == "public"
    assert event.details["initiated_by"] == "contact"
    assert event.details["ac_contact_id"] == "42"
    assert event.details["type"] == "unsubscribe"
    assert event.details["reported_at"] == reported.astimezone(CENTRAL).isoformat()
    deliver(ac_app)  # the withdrawal goes back out like any other: harmless, both sides equal
    assert fake_ac.contact_status(ADA, 1) == 2
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0


def test_a_repeated_delivery_records_one_withdrawal(ac_newsletter, confirmed, ac_app, client):
    confirmed(ADA)
    for _ in range(3):
        assert client.post(URL, data=_payload()).status_code == 200
    assert len(_events(ac_app, "unsubscribed")) == 1


def test_a_time_that_cannot_be_true_is_replaced_by_the_time_received(ac_newsletter, confirmed,
                                                                       ac_app, client, runner):
    """A pre-dated (or post-dated) report still withdraws, since unsubscribe always wins, but
    at the time it reached us: no time is invented, and the ledger's times keep their order."""
    confirmed(ADA)
    stale = datetime(2020, 1, 1, tzinfo=UTC)
    before = datetime.now(UTC)
    assert client.post(URL, data=_payload(at=stale)).status_code == 200
    after = datetime.now(UTC)
    sub = _sub(ac_app)
    assert sub.status == "unsubscribed"
    assert before <= sub.withdrawn_at <= after and sub.withdrawn_at > sub.confirmed_at
    [event] = _events(ac_app, "unsubscribed")
    assert event.at == sub.withdrawn_at
    assert event.details["reported_at"].startswith("2019-12-31T19")  # kept as reported
    assert event.details["time_source"] == "received (the reported time is before this consent)"
    with ac_app.app_context():
        times = db.session.scalars(select(ConsentEvent.at).where(
            ConsentEvent.subscription_id == sub.id).order_by(ConsentEvent.seq)).all()
    assert times == sorted(times)

    confirmed("bob@example.org")
    ahead = datetime.now(UTC) + timedelta(days=3)
    assert client.post(URL, data=_payload("bob@example.org", at=ahead)).status_code == 200
    bob = _sub(ac_app, "bob@example.org")
    assert bob.withdrawn_at <= datetime.now(UTC)
    [_, bobs] = _events(ac_app, "unsubscribed")
    assert bobs.details["time_source"] == "received (the reported time is in the future)"
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0


def test_a_spam_complaint_withdraws(ac_newsletter, confirmed, ac_app, client):
    confirmed(ADA)
    assert client.post(URL, data=_payload(type_="spam")).status_code == 200
    assert _sub(ac_app).status == "unsubscribed"
    [event] = _events(ac_app, "complaint")
    assert event.origin == "activecampaign"


def test_a_bounce_is_recorded_without_withdrawing(ac_newsletter, confirmed, ac_app, client):
    confirmed(ADA)
    payload = _payload(type_="bounce", **{"bounce[type]": "hard"})
    for _ in range(2):  # delivered twice
        assert client.post(URL, data=payload).status_code == 200

    assert _sub(ac_app).status == "confirmed"
    [event] = _events(ac_app, "bounced")
    assert event.details["bounce_type"] == "hard" and event.origin == "activecampaign"


@pytest.mark.parametrize(("payload", "answer"), [
    # The same answer as for a recorded withdrawal: it must not tell known from unknown.
    (_payload("stranger@example.org"), "ok"),               # an address we do not know
    (_payload(list_id="7"), "ok"),                          # a list we do not sync
    (_payload("not an address"), "ok"),
    (_payload(type_="open"), "ok"),                         # an event we do not use
    ({"type": "unsubscribe", "list": "1"}, "ignored"),      # no address at all
])
def test_anything_else_is_answered_200_and_changes_nothing(ac_newsletter, confirmed, ac_app,
                                                           client, payload, answer):
    confirmed(ADA)
    with ac_app.app_context():
        before = db.session.scalar(select(func.count()).select_from(ConsentEvent))

    response = client.post(URL, data=payload)

    assert response.status_code == 200
    assert response.get_json() == {"status": answer}
    assert _sub(ac_app).status == "confirmed"
    with ac_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == before


def _statuses(app, address=ADA) -> dict[str, str]:
    with app.app_context():
        return dict(db.session.execute(
            select(MailingList.slug, Subscription.status).join(Subscription.mailing_list)
            .where(Subscription.email == address)).all())


def test_an_unsubscribe_without_a_list_withdraws_from_every_synced_list(ac_newsletter, confirmed,
                                                                        ac_app, client, fake_ac):
    with ac_app.app_context():  # a second synced list, and one that is not synced at all
        for slug, ac_list_id in (("product-news", 2), ("offline", None)):
            mailing_list = lists.create_list(slug, slug.title(), ac_list_id=ac_list_id)
            lists.add_consent_text(mailing_list, "de", lists.DEMO_TEXTS["de"])
    for slug in ("newsletter", "product-news", "offline"):
        confirmed(ADA, list=slug)
    assert (fake_ac.contact_status(ADA, 1), fake_ac.contact_status(ADA, 2)) == (1, 1)

    response = client.post(URL, data=_payload(list_id="0"))

    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})
    assert _statuses(ac_app) == {"newsletter": "unsubscribed", "product-news": "unsubscribed",
                                 "offline": "confirmed"}
    deliver(ac_app)
    assert (fake_ac.contact_status(ADA, 1), fake_ac.contact_status(ADA, 2)) == (2, 2)


def test_a_pending_signup_is_withdrawn_too(ac_newsletter, signed_up, ac_app, client):
    signed_up(ADA)
    assert client.post(URL, data=_payload()).status_code == 200
    assert _sub(ac_app).status == "unsubscribed"
    with ac_app.app_context():  # never confirmed, so never sent: nothing to tell ActiveCampaign
        deliver(ac_app)
        assert db.session.scalar(select(OutboxItem.status).where(
            OutboxItem.kind == "ac_unsubscribe")) == "done"


@pytest.mark.parametrize(("url", "status"), [
    ("/webhooks/activecampaign?secret=wrong-secret-0123456789", 403),
    ("/webhooks/activecampaign?secret=", 401),
    ("/webhooks/activecampaign", 401),
    (f"/webhooks/activecampaign?secret={SECRET}x", 403),
])
def test_a_wrong_or_missing_secret_is_refused(ac_newsletter, confirmed, ac_app, client, url,
                                              status, caplog):
    confirmed(ADA)
    response = client.post(url, data=_payload())

    assert response.status_code == status  # never 410, which would switch the webhook off
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == status
    assert _sub(ac_app).status == "confirmed"
    assert SECRET not in caplog.text


@pytest.mark.parametrize(("data", "content_type"), [
    (None, None),                                             # no body at all
    ("", "application/x-www-form-urlencoded"),                # an empty form
    ('{"type": "unsubscribe"}', "application/json"),          # not what ActiveCampaign posts
    ("type=unsubscribe", "text/plain"),
])
def test_a_post_without_form_fields_is_a_bad_request_never_gone(ac_newsletter, confirmed, ac_app,
                                                                 client, data, content_type):
    confirmed(ADA)
    with ac_app.app_context():
        before = db.session.scalar(select(func.count()).select_from(ConsentEvent))

    response = client.post(URL, data=data, content_type=content_type)

    assert response.status_code == 400  # never 410 (switches the webhook off), never a 5xx
    assert response.mimetype == "application/problem+json"
    assert "form fields" in response.get_json()["detail"]
    with ac_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == before
    documented = client.get("/openapi.json").json["paths"]["/webhooks/activecampaign"]["post"]
    assert "application/problem+json" in documented["responses"]["400"]["content"]


def test_without_the_secret_a_bodyless_post_is_refused_for_the_secret(ac_app, client):
    assert client.post("/webhooks/activecampaign").status_code == 401


def test_webhooks_are_refused_when_no_secret_is_configured(tmp_path, mailbox):
    app = build_app(make_config(tmp_path, OPTIN_AC_WEBHOOK_SECRET=""))
    try:
        response = app.test_client().post(URL, data=_payload())
        assert response.status_code == 403
        assert "disabled" in response.get_json()["detail"]
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_other_methods_are_not_allowed_never_gone(ac_app, client):
    assert client.get(URL).status_code == 405


def test_the_webhook_is_in_the_openapi_document(ac_app, client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "post" in paths["/webhooks/activecampaign"]


def test_addresses_stay_out_of_the_logs(ac_newsletter, confirmed, ac_app, client, caplog):
    caplog.set_level(logging.INFO)
    confirmed(ADA)
    assert client.post(URL, data=_payload()).status_code == 200
    assert _sub(ac_app).status == "unsubscribed"
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("optin")]
    assert any("webhook" in m for m in ours)
    assert not any(ADA in m for m in ours)
