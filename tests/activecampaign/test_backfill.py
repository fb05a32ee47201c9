"""``optin ac backfill``: every consent record of a list in bulk imports, against the fake
ActiveCampaign."""

from __future__ import annotations

import json
import math

import pytest
from sqlalchemy import func, select

from optin import create_app
from optin.activecampaign import backfill
from optin.activecampaign.client import BULK_IMPORTS_PER_MINUTE
from optin.config import current_settings
from optin.consent import subscriptions
from optin.consent.addresses import address_hash
from optin.extensions import db
from optin.models import ConsentEvent, JobState, MailingList, Subscription, utcnow

from ..conftest import deliver

ADA, BOB, CAROL, DAVE, ERIN, FAY = (
    f"{name}@example.org" for name in ("ada", "bob", "carol", "dave", "erin", "fay"))


@pytest.fixture
def app_config(app_config):
    app_config["OPTIN_AC_FIELD_MAP"] = "company:3,a:11,b:12,c:13,d:14,e:15"
    return app_config


def _insert(app, list_id: int, count: int, status: str = "confirmed", prefix: str = "reader",
            fields: dict | None = None) -> None:
    """Subscriptions straight into the table: thousands of signups by HTTP would take minutes."""
    with app.app_context():
        key, now = current_settings().hash_key, utcnow()
        db.session.add_all(
            Subscription(list_id=list_id, status=status, email=email,
                         email_hash=address_hash(email, key), locale="de",
                         nonce=subscriptions.new_nonce(), fields=fields, first_name="Reader",
                         confirmed_at=None if status == "pending" else now,
                         withdrawn_at=now if status == "unsubscribed" else None)
            for email in (f"{prefix}{i:05}@example.org" for i in range(count))
        )
        db.session.commit()


def _map_list(app, list_id: int, ac_list_id: int | None = 1) -> None:
    with app.app_context():
        db.session.get(MailingList, list_id).ac_list_id = ac_list_id
        db.session.commit()


def _imports(fake_ac, ok_only: bool = True) -> list:
    return [r for r in fake_ac.requests_to("POST", "import/bulk_import")
            if not ok_only or r.status == 200]


def _imported_emails(fake_ac) -> list[str]:
    return [c["email"] for r in _imports(fake_ac) for c in r.json["contacts"]]


def test_a_few_thousand_contacts_take_ceil_n_over_batch_requests(ac_newsletter, ac_app, fake_ac,
                                                                 runner):
    list_id = ac_newsletter["id"]
    _insert(ac_app, list_id, 2345)
    _insert(ac_app, list_id, 30, status="unsubscribed", prefix="gone")
    _insert(ac_app, list_id, 20, status="pending", prefix="maybe")

    result = runner.invoke(args=["ac", "backfill", "--list", "newsletter"])

    assert result.exit_code == 0, result.output
    sent = 2345 + 30
    requests = _imports(fake_ac, ok_only=False)
    assert len(requests) == math.ceil(sent / 250) == 10
    assert all(len(r.json["contacts"]) <= 250 for r in requests)
    assert f"sent {sent}, skipped 20, failed 0 (10 requests)" in result.output
    assert fake_ac.rate_limited == 0
    assert fake_ac.contact_status("reader00000@example.org", 1) == 1
    assert fake_ac.contact_status("reader02344@example.org", 1) == 1
    assert fake_ac.contact_status("gone00029@example.org", 1) == 2
    assert fake_ac.contact("maybe00000@example.org") is None
    with ac_app.app_context():
        synced = db.session.scalar(select(func.count()).select_from(ConsentEvent)
                                   .where(ConsentEvent.kind == "synced"))
        assert synced == sent
        event = db.session.scalar(select(ConsentEvent).where(ConsentEvent.kind == "synced"))
        assert event.origin == "backfill" and event.details["status"] == "queued"
        assert event.details["batch_id"] and event.details["ac_list_id"] == 1
        assert db.session.get(JobState, "ac-backfill:newsletter") is None  # finished


def test_withdrawals_go_as_unsubscribed_and_are_never_subscribed(
        ac_app, newsletter, confirmed, signed_up, client, fake_ac, runner):
    # Sync is live but the list was not mapped yet: nothing reached ActiveCampaign.
    confirmed(ADA, first_name="Ada", fields={"company": "ACME", "hobby": "chess"})
    for address in (BOB, CAROL, DAVE, ERIN):
        confirmed(address)
    signed_up(FAY)  # pending
    with ac_app.app_context():
        for address in (BOB, ERIN):
            sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
            assert subscriptions.unsubscribe(sub.id, None, subscriptions.Client()) == "unsubscribed"
        dave = db.session.scalar(select(Subscription).where(Subscription.email == DAVE))
        subscriptions.suppress(dave.list_id, dave.email_hash, reason="operator")
        db.session.commit()
    confirmed(ERIN)  # Erin came back with a fresh confirmed consent
    deliver(ac_app)
    fake_ac.add_contact(CAROL, 1, status=2)  # Carol unsubscribed inside ActiveCampaign
    _map_list(ac_app, newsletter["id"])

    result = runner.invoke(args=["ac", "backfill"])

    assert result.exit_code == 0, result.output
    assert "sent 4, skipped 3, failed 0 (1 requests)" in result.output
    [request] = _imports(fake_ac)
    contacts = {c["email"]: c for c in request.json["contacts"]}
    assert set(contacts) == {ADA, BOB, CAROL, ERIN}
    assert contacts[ADA] == {"email": ADA, "first_name": "Ada", "subscribe": [{"listid": 1}],
                             "fields": [{"id": 3, "value": "ACME"}]}
    assert contacts[BOB] == {"email": BOB, "unsubscribe": [{"listid": 1}]}  # address only
    assert "subscribe" in contacts[ERIN] and "unsubscribe" not in contacts[ERIN]
    assert fake_ac.contact_status(ADA, 1) == 1
    assert fake_ac.contact_status(BOB, 1) == 2
    assert fake_ac.contact_status(CAROL, 1) == 2  # an import never re-subscribes
    assert fake_ac.contact_status(ERIN, 1) == 1
    assert fake_ac.contact(DAVE) is None and fake_ac.contact(FAY) is None
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0


def test_an_interrupted_backfill_resumes_where_it_stopped(ac_newsletter, ac_app, fake_ac, runner):
    _insert(ac_app, ac_newsletter["id"], 45)
    fake_ac.bulk_imports_per_minute = 2  # the third import is refused for a minute

    first = runner.invoke(args=["ac", "backfill", "--batch", "10", "--retries", "0"])

    assert first.exit_code == 1
    assert "sent 20, skipped 0, failed 0" in first.output
    assert "interrupted" in first.output and "run the same command again" in first.output
    assert len(set(_imported_emails(fake_ac))) == 20

    fake_ac.bulk_imports_per_minute = None
    second = runner.invoke(args=["ac", "backfill", "--batch", "10"])

    assert second.exit_code == 0, second.output
    assert "resuming after subscription 20" in second.output
    assert "sent 25, skipped 0, failed 0 (3 requests)" in second.output
    emails = _imported_emails(fake_ac)
    assert len(emails) == len(set(emails)) == 45  # each contact exactly once


def test_each_app_keeps_its_own_bulk_import_pace(ac_newsletter, ac_app, ac_config, fake_ac):
    """ActiveCampaign's 100 imports a minute: after 100 the app waits out the minute before
    the next, while another app in the same process (another host's) has a count of its own."""
    _insert(ac_app, ac_newsletter["id"], 3)
    with ac_app.app_context():
        pace = ac_app.extensions[backfill.PACE_EXTENSION]
        for _ in range(BULK_IMPORTS_PER_MINUTE):
            pace.wait(lambda seconds: pytest.fail(f"waited {seconds} s before the 100th"))
    other = create_app(dict(ac_config))
    waits: dict[str, list[float]] = {"other": [], "busy": []}
    try:
        with other.app_context():
            backfill.backfill(db.session.get(MailingList, ac_newsletter["id"]),
                              sleep=waits["other"].append)
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
    with ac_app.app_context():
        backfill.backfill(db.session.get(MailingList, ac_newsletter["id"]),
                          sleep=waits["busy"].append)
    assert waits["other"] == []
    [waited] = waits["busy"]
    assert 59 < waited <= 60.5
    assert len(_imports(fake_ac)) == 2


def test_contacts_activecampaign_rejects_are_counted_and_the_rest_sent(ac_newsletter, ac_app,
                                                                      fake_ac, runner):
    _insert(ac_app, ac_newsletter["id"], 5)
    with ac_app.app_context():  # an address ActiveCampaign will not take
        db.session.add(Subscription(list_id=ac_newsletter["id"], status="confirmed",
                                    email="root@localhost", email_hash="f" * 64, locale="de",
                                    nonce="n", confirmed_at=utcnow()))
        db.session.commit()

    result = runner.invoke(args=["ac", "backfill"])

    assert result.exit_code == 1
    assert "sent 5, skipped 0, failed 1 (2 requests)" in result.output
    assert fake_ac.contact_status("reader00004@example.org", 1) == 1


def test_batches_stay_under_the_payload_limit(ac_newsletter, ac_app, fake_ac, runner):
    big = {name: name * 1000 for name in "abcde"}  # five mapped fields of 1000 characters
    _insert(ac_app, ac_newsletter["id"], 100, fields=big)

    result = runner.invoke(args=["ac", "backfill"])

    assert result.exit_code == 0, result.output
    requests = _imports(fake_ac)
    assert len(requests) == 2  # 100 fit the count limit, not the size limit
    assert all(len(json.dumps(r.json).encode()) < 400_000 for r in requests)
    assert len(set(_imported_emails(fake_ac))) == 100
    assert fake_ac.contact("reader00099@example.org")["fieldValues"]["15"] == "e" * 1000


def test_dry_run_sends_nothing_and_ledgers_each_as_skipped(app, newsletter, runner):
    _map_list(app, newsletter["id"])
    _insert(app, newsletter["id"], 5)

    result = runner.invoke(args=["ac", "backfill"])

    assert result.exit_code == 0, result.output
    assert "dry-run" in result.output and "sent 0, skipped 5, failed 0" in result.output
    with app.app_context():
        kinds = db.session.scalars(select(ConsentEvent.kind)).all()
        assert kinds == ["sync_skipped"] * 5


def test_a_list_without_an_activecampaign_id_is_refused(ac_app, newsletter, runner):
    result = runner.invoke(args=["ac", "backfill", "--list", "newsletter"])
    assert result.exit_code != 0 and "no ActiveCampaign list id" in result.output
    assert runner.invoke(args=["ac", "backfill"]).exit_code != 0
