"""Signed links: expiry, tampering, purpose separation, and what the pages say."""

from __future__ import annotations

import itsdangerous.timed
import pytest
from sqlalchemy import select

from optin.consent.tokens import CONFIRM, UNSUBSCRIBE, TokenExpired, TokenInvalid, make_token, read_token
from optin.extensions import db
from optin.models import Subscription

from ..conftest import SECRET, deliver, links

HOUR = 3600


@pytest.fixture
def clock(monkeypatch):
    """Move itsdangerous's notion of now: tokens carry their signing time."""
    import time

    offset = {"seconds": 0}
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp",
                        lambda self: int(time.time() + offset["seconds"]))
    return offset


def test_round_trip_and_purpose():
    token = make_token(SECRET, CONFIRM, 42, "abc")
    assert read_token(SECRET, CONFIRM, token, 60).subscription_id == 42
    with pytest.raises(TokenInvalid):
        read_token(SECRET, UNSUBSCRIBE, token)  # salted per purpose
    with pytest.raises(TokenInvalid):
        read_token("another-secret-key-0123456789", CONFIRM, token)


def test_expiry_is_exact(clock):
    token = make_token(SECRET, CONFIRM, 7, "n")
    clock["seconds"] = 72 * HOUR - 5
    assert read_token(SECRET, CONFIRM, token, 72 * HOUR).nonce == "n"
    clock["seconds"] = 72 * HOUR + 5
    with pytest.raises(TokenExpired) as caught:
        read_token(SECRET, CONFIRM, token, 72 * HOUR)
    assert caught.value.data.subscription_id == 7  # so a fresh mail can be offered


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
    lambda t: t[:10],
    lambda t: "x" + t,
    lambda t: "not-a-token",
])
def test_tampered_links_show_a_friendly_page(app, client, signed_up, mangle):
    path = signed_up()
    bad = "/confirm/" + mangle(path.split("/")[-1])
    for response in (client.get(bad), client.post(bad)):
        assert response.status_code == 404
        assert response.mimetype == "text/html"
        text = response.get_data(as_text=True)
        assert "Traceback" not in text and "<h1" in text
    with app.app_context():
        assert db.session.scalar(select(Subscription.status)) == "pending"


def test_unsubscribe_token_cannot_confirm(app, client, signed_up):
    path = signed_up()
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        unsubscribe_token = make_token(SECRET, UNSUBSCRIBE, sub.id, sub.nonce)
    assert client.post(f"/confirm/{unsubscribe_token}").status_code == 404
    assert client.post(path).status_code == 303


def test_expired_link_offers_a_fresh_mail(app, client, signed_up, mailbox, clock):
    path = signed_up("late@example.org")
    clock["seconds"] = 73 * HOUR
    page = client.get(path, headers={"Accept-Language": "en"})
    assert page.status_code == 410
    assert b"/resend" in page.data
    assert client.post(path).status_code == 410  # an expired link confirms nothing
    with app.app_context():
        assert db.session.scalar(select(Subscription.status)) == "pending"
        # Past the resend interval too:
        sub = db.session.scalar(select(Subscription))
        from datetime import timedelta

        sub.last_mail_requested_at -= timedelta(hours=73)
        db.session.commit()

    resent = client.post(path + "/resend")
    assert resent.status_code == 303
    deliver(app)
    fresh = links(mailbox.to("late@example.org")[-1])["confirm"]
    assert fresh != path
    assert client.post(fresh).status_code == 303
    with app.app_context():
        assert db.session.scalar(select(Subscription.status)) == "confirmed"


def test_old_confirm_link_cannot_reconfirm_after_unsubscribe(app, client, signed_up, mailbox):
    path = signed_up("i@example.org")
    client.post(path)
    deliver(app)
    unsubscribe = links(mailbox.to("i@example.org")[-1])["unsubscribe"]
    assert client.post(unsubscribe).status_code == 303
    # The honest page ("this subscription was ended"), and nothing is confirmed again.
    assert "Diese Anmeldung ist beendet" in client.post(path).get_data(as_text=True)
    assert "Diese Anmeldung ist beendet" in client.get(path).get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Subscription.status)) == "unsubscribed"


def test_unsubscribe_links_do_not_expire(app, client, confirmed, clock):
    unsubscribe = confirmed("j@example.org")
    clock["seconds"] = 5 * 365 * 24 * HOUR
    assert b'method="post"' in client.get(unsubscribe).data
    assert client.post(unsubscribe).status_code == 303
    with app.app_context():
        assert db.session.scalar(select(Subscription.status)) == "unsubscribed"
