"""What the rerun of issue 13's hostile attack still broke (bench/attack/). Each test fails
today and is marked xfail(strict=True): when the cause is fixed it passes, and strict
turns that into a failure here, so whoever fixes it removes the mark."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import OutboxItem, Subscription, utcnow

from .conftest import deliver, signup

HOOK = "/webhooks/activecampaign?secret=webhook-secret-0123456789"


@pytest.fixture
def app_config(app_config):
    app_config["OPTIN_TRUSTED_PROXIES"] = "1"  # as behind the production proxy
    return app_config


def _status(app, address: str) -> str:
    with app.app_context():
        return db.session.scalar(select(Subscription.status).where(Subscription.email == address))


@pytest.mark.xfail(strict=True, reason="parse_ac_time (activecampaign/sync.py) catches ValueError "
                   "but not the OverflowError of astimezone(UTC) on year 1 / year 9999: 500, "
                   "withdrawal lost")
@pytest.mark.parametrize("reported", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_unsubscribe_webhook_with_an_out_of_range_time_still_withdraws(
        ac_newsletter, confirmed, ac_app, client, reported):
    confirmed("ada@example.org")
    response = client.post(HOOK, data={"type": "unsubscribe", "list": "1",
                                       "contact[email]": "ada@example.org",
                                       "date_time": reported})
    assert response.status_code == 200
    assert _status(ac_app, "ada@example.org") == "unsubscribed"


@pytest.mark.xfail(strict=True, reason="Client.of (consent/subscriptions.py) accepts an IPv6 "
                   "zone id of any length; ledger.event_row hashes the ip uncut, StorableText(45) "
                   "cuts it on the way in: an honest event reads as TAMPERED")
def test_a_long_ipv6_zone_id_does_not_make_the_ledger_look_tampered(app, client, newsletter,
                                                                    runner):
    response = client.post("/v1/subscriptions",
                           json={"email": "zone@example.org", "list": "newsletter",
                                 "consent_text_version": 1},
                           headers={"X-Forwarded-For": "fe80::1%" + "x" * 60})
    assert response.status_code == 202
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output


class CommitFailsAfterFirstMail:
    """Fails the first COMMIT after the SMTP server took a mail (the delivery's own)."""

    def __init__(self, mailbox) -> None:
        self.mailbox = mailbox
        self.failed = False

    def __call__(self, session) -> None:
        if not self.failed and self.mailbox.messages:
            self.failed = True
            raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))


@pytest.mark.xfail(strict=True, reason="outbox.deliver/_record_kept (delivery/outbox.py) records "
                   "the sent mail after a failed COMMIT but leaves its row pending, so a live "
                   "worker sends it again after a database blip (no crash)")
def test_a_mail_on_record_as_sent_is_not_sent_again_after_a_database_blip(
        app, client, newsletter, mailbox):
    assert signup(client, "a@example.org").status_code == 202
    fault = CommitFailsAfterFirstMail(mailbox)
    event.listen(Session, "before_commit", fault)
    try:
        with app.app_context():
            Worker(app).run_once()
    finally:
        event.remove(Session, "before_commit", fault)
    assert fault.failed and len(mailbox.to("a@example.org")) == 1
    with app.app_context():
        for row in db.session.scalars(select(OutboxItem)):
            row.next_attempt_at = utcnow()
        db.session.commit()
    deliver(app)
    assert len(mailbox.to("a@example.org")) == 1
