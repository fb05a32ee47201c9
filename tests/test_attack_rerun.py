"""What the rerun of issue 13's hostile attack (bench/attack/) still broke, each failing
before its fix: a webhook time out of UTC's range lost a withdrawal, a long IPv6 zone id
made an honest ledger event read as tampered, and a mail on record as sent went out again
after a database blip."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import OutboxItem, Subscription, utcnow

from .conftest import FailingCommits, deliver, failing_commits, signup

HOOK = "/webhooks/activecampaign?secret=webhook-secret-0123456789"


@pytest.fixture
def app_config(app_config):
    app_config["OPTIN_TRUSTED_PROXIES"] = "1"  # as behind the production proxy
    return app_config


def _status(app, address: str) -> str:
    with app.app_context():
        return db.session.scalar(select(Subscription.status).where(Subscription.email == address))


@pytest.mark.parametrize("reported", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_unsubscribe_webhook_with_an_out_of_range_time_still_withdraws(
        ac_newsletter, confirmed, ac_app, client, reported):
    confirmed("ada@example.org")
    response = client.post(HOOK, data={"type": "unsubscribe", "list": "1",
                                       "contact[email]": "ada@example.org",
                                       "date_time": reported})
    assert response.status_code == 200
    assert _status(ac_app, "ada@example.org") == "unsubscribed"


def test_a_long_ipv6_zone_id_does_not_make_the_ledger_look_tampered(app, client, newsletter,
                                                                    runner):
    response = client.post("/v1/subscriptions",
                           json={"email": "zone@example.org", "list": "newsletter",
                                 "consent_text_version": 1},
                           headers={"X-Forwarded-For": "fe80::1%" + "x" * 60})
    assert response.status_code == 202
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output


def test_a_mail_on_record_as_sent_is_not_sent_again_after_a_database_blip(
        app, client, newsletter, mailbox):
    assert signup(client, "a@example.org").status_code == 202
    with failing_commits(FailingCommits(when=lambda: mailbox.messages)) as fault, \
            app.app_context():
        Worker(app).run_once()
    assert fault.failed and len(mailbox.to("a@example.org")) == 1
    with app.app_context():
        for row in db.session.scalars(select(OutboxItem)):
            row.next_attempt_at = utcnow()
        db.session.commit()
    deliver(app)
    assert len(mailbox.to("a@example.org")) == 1
