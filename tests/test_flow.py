"""The whole double opt-in through HTTP, a real SMTP server and the CLI."""

from __future__ import annotations

from sqlalchemy import select

from optin.extensions import db
from optin.models import ConsentEvent, Subscription

from .conftest import deliver, links, signup


def _events(app, address):
    with app.app_context():
        sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
        return [e.kind for e in db.session.scalars(
            select(ConsentEvent).where(ConsentEvent.subscription_id == sub.id)
            .order_by(ConsentEvent.seq))]


def test_signup_confirm_unsubscribe_end_to_end(app, client, runner, newsletter, mailbox):
    response = signup(client, "Anna@Example.org", first_name="Anna")
    assert response.status_code == 202
    assert mailbox.messages == []  # nothing is mailed before the worker runs

    assert deliver(app) == 1
    [mail] = mailbox.to("Anna@example.org")
    assert mail["Message-ID"] and mail["Date"]
    assert "Anna" in str(mail["To"])
    confirm_path = links(mail)["confirm"]

    # A scanner (or the recipient) opening the link consents to nothing.
    page = client.get(confirm_path)
    assert page.status_code == 200
    assert b'method="post"' in page.data
    assert _events(app, "Anna@example.org") == ["signup_requested", "confirmation_sent"]

    done = client.post(confirm_path, environ_base={"REMOTE_ADDR": "198.51.100.23"},
                       headers={"User-Agent": "Firefox/140 (test)"})
    assert done.status_code == 303  # POST-redirect-GET: to the page that says so
    assert client.get(done.headers["Location"]).status_code == 200
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        confirmed = [e for e in sub.events if e.kind == "confirmed"][0]
        assert sub.status == "confirmed"
        assert confirmed.ip == "198.51.100.23"
        assert confirmed.user_agent == "Firefox/140 (test)"
        assert confirmed.consent_text_id == sub.consent_text_id

    again = client.post(confirm_path)
    assert again.status_code == 303
    assert _events(app, "Anna@example.org").count("confirmed") == 1

    deliver(app)  # welcome mail + (dry-run) sync
    welcome = mailbox.to("Anna@example.org")[-1]
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_path = links(welcome)["unsubscribe"]
    assert welcome["List-Unsubscribe"] == f"<http://newsletter.test{unsubscribe_path}>"

    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output

    # RFC 8058 one-click: form body, no cookies, no redirect.
    one_click = client.post(unsubscribe_path, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    assert "Set-Cookie" not in one_click.headers
    second = client.post(unsubscribe_path, data={"List-Unsubscribe": "One-Click"})
    assert second.status_code == 200
    kinds = _events(app, "Anna@example.org")
    assert kinds.count("unsubscribed") == 1
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        assert sub.status == "unsubscribed"
        assert sub.first_name is None
        assert sub.withdrawal_origin == "one_click"

    # The old confirmation link cannot bring the subscription back; it says so honestly.
    old = client.post(confirm_path)
    assert "Diese Anmeldung ist beendet" in old.get_data(as_text=True)
    assert _events(app, "Anna@example.org").count("confirmed") == 1
    with app.app_context():
        assert db.session.scalar(select(Subscription)).status == "unsubscribed"
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0
