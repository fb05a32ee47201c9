"""The confirm and unsubscribe pages: GET changes nothing, POST acts, proxies are honoured."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from optin.extensions import db
from optin.models import ConsentEvent, Subscription

from ..conftest import build_app, deliver, links, signup


def _status(app) -> str:
    with app.app_context():
        return db.session.scalar(select(Subscription.status))


def test_scanners_opening_links_change_nothing(app, client, signed_up):
    path = signed_up()
    for _ in range(3):
        page = client.get(path)
        assert page.status_code == 200
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["Referrer-Policy"] == "no-referrer"
    client.head(path)
    assert _status(app) == "pending"
    with app.app_context():
        kinds = db.session.scalars(select(ConsentEvent.kind)).all()
    assert "confirmed" not in kinds


def test_confirm_page_shows_the_consent_text_and_language(app, client, signed_up):
    path = signed_up(locale="en")
    page = client.get(path).get_data(as_text=True)
    assert 'lang="en"' in page
    assert "Yes, I would like to receive the newsletter" in page


def test_unsubscribe_page_changes_nothing_until_the_button(app, client, confirmed):
    unsubscribe = confirmed()
    assert b'method="post"' in client.get(unsubscribe).data
    assert _status(app) == "confirmed"
    assert client.post(unsubscribe).status_code == 303
    assert _status(app) == "unsubscribed"
    # The page still answers, politely, once withdrawn.
    assert client.get(unsubscribe).status_code == 200


def test_one_click_accepts_multipart_without_cookies_or_redirect(app, client, confirmed):
    unsubscribe = confirmed()
    response = client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"},
                           content_type="multipart/form-data")
    assert response.status_code == 200
    assert "Location" not in response.headers and "Set-Cookie" not in response.headers
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        assert (sub.status, sub.withdrawal_origin) == ("unsubscribed", "one_click")


@pytest.mark.parametrize(("trusted", "forwarded", "expected"), [
    ("0", "198.51.100.9", "127.0.0.1"),           # no proxy trusted: header ignored
    ("1", "198.51.100.9", "198.51.100.9"),        # our proxy's hop
    ("1", "6.6.6.6, 198.51.100.9", "198.51.100.9"),  # a forged hop before it is ignored
    ("2", "198.51.100.9, 10.0.0.2", "198.51.100.9"),
])
def test_client_ip_honours_trusted_proxies_only(app_config, mailbox, trusted, forwarded, expected):
    from optin.consent import lists

    app_config["OPTIN_TRUSTED_PROXIES"] = trusted
    app = build_app(app_config)
    with app.app_context():
        mailing_list = lists.create_list("newsletter", "News")
        lists.add_consent_text(mailing_list, "de", "Ja.")
    client = app.test_client()
    signup(client, "proxy@example.org")
    deliver(app)
    path = links(mailbox.to("proxy@example.org")[-1])["confirm"]
    client.post(path, headers={"X-Forwarded-For": forwarded},
                environ_base={"REMOTE_ADDR": "127.0.0.1"})
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent).where(ConsentEvent.kind == "confirmed"))
        assert event.ip == expected


def test_an_expired_link_shows_the_same_page_whatever_the_state(app, client, signed_up, confirmed,
                                                                mailbox, monkeypatch):
    """The page (and the resend button's answer) must not tell the link's holder whether the
    signup is pending, confirmed or withdrawn."""
    import re
    import time

    from itsdangerous.timed import TimestampSigner

    pending = signed_up("pending@example.org")
    confirmed("confirmed@example.org")
    confirmed_link = links(mailbox.to("confirmed@example.org")[0])["confirm"]
    unsubscribe = confirmed("withdrawn@example.org")
    withdrawn_link = links(mailbox.to("withdrawn@example.org")[0])["confirm"]
    assert client.post(unsubscribe).status_code == 303
    monkeypatch.setattr(TimestampSigner, "get_timestamp",
                        lambda self: int(time.time() + 73 * 3600))  # past the link's 72 hours
    before = len(mailbox.messages)

    pages, answers = [], []
    for path in (pending, confirmed_link, withdrawn_link):
        page = client.get(path)
        assert page.status_code == 410
        html = page.get_data(as_text=True).replace(path.rsplit("/", 1)[1], "TOKEN")
        pages.append(html)
        resend = re.search(r'<form method="post" action="([^"]+)"', html)
        assert resend is not None
        done = client.post(path + "/resend")
        answers.append((done.status_code, done.get_data(as_text=True)))

    assert pages[0] == pages[1] == pages[2]
    assert answers[0] == answers[1] == answers[2]
    deliver(app)
    assert len(mailbox.messages) == before  # within the resend interval: nothing for anyone
