"""No withdrawal waits on (or is lost to) a delivery group in flight (a hung relay).

A real ``optin worker`` process sends a group whose first mail the suite's aiosmtpd server
stalls in DATA (25 s, under the worker's 30 s SMTP timeout): on PostgreSQL the group holds
its subscriptions' row locks all that time. The one-click POST, the page's button, the
ActiveCampaign webhook and the operator's erasure still answer within the lock wait
(queued on PostgreSQL, applied at once on SQLite), the worker applies them with the
request's time and IP once the group ends, and no mail the group held for those
subscriptions leaves after them."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import select

from optin.consent import ledger
from optin.delivery.notifications import unsubscribe_url
from optin.extensions import db
from optin.models import (
    ConsentEvent,
    MailingList,
    OutboxItem,
    Subscription,
    SubscriptionStatus,
    Suppression,
)

from ..conftest import ADMIN_TOKEN, PG_URL, deliver, links, signup, wait_for

ONE_THREAD = {"OPTIN_WORKER_THREADS": "1", "OPTIN_WORKER_LEASE_SECONDS": "2",
              "OPTIN_WORKER_HEARTBEAT_SECONDS": "0.5"}
STALL_SECONDS = 25.0
#: Generous against the stall: the answer came back long before the relay would.
ANSWERED_WITHIN = 10.0
WEBHOOK = "/webhooks/activecampaign?secret=webhook-secret-0123456789"
WITHDRAWN = "Sie sind abgemeldet"
ONE_CLICK, BUTTON, WEBHOOK_ADDRESS, ERASED = ("oneclick@example.org", "button@example.org",
                                              "webhook@example.org", "erased@example.org")
HUNG = "hung@example.org"


def _timed(call):  # noqa: ANN001, ANN202
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def _sub(app, address: str) -> Subscription:
    with app.app_context():
        sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
        db.session.expunge(sub)
        return sub


def _queued(app) -> list[OutboxItem]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxItem).where(
            OutboxItem.kind == "withdrawal_intake").order_by(OutboxItem.id)))
        db.session.expunge_all()
        return rows


def _settled(app) -> bool:
    with app.app_context():
        left = db.session.scalar(select(OutboxItem.id).where(
            OutboxItem.status == "pending",
            OutboxItem.kind.in_(("confirm_mail", "welcome_mail", "withdrawal_intake"))))
        db.session.rollback()
        return left is None


def test_withdrawals_answer_while_a_group_hangs_on_the_relay(app, client, newsletter, mailbox,
                                                             worker_processes):
    with app.app_context():
        db.session.get(MailingList, newsletter["id"]).ac_list_id = 1  # the webhook's list
        db.session.commit()
    leavers = (ONE_CLICK, BUTTON, WEBHOOK_ADDRESS, ERASED)
    for address in leavers:
        assert signup(client, address, first_name="Kim").status_code == 202
    deliver(app)
    confirm = {a: links(mailbox.to(a)[-1])["confirm"] for a in leavers}
    # The hung mail first in the group, then the three welcome mails behind it.
    assert signup(client, HUNG).status_code == 202
    for address in leavers:
        assert client.post(confirm[address]).status_code == 303  # queues the welcome
    paths = {}
    with app.app_context():
        for address in (ONE_CLICK, BUTTON):
            sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
            paths[address] = unsubscribe_url(sub).split("newsletter.test", 1)[1]
    mailbox.clear()
    mailbox.delay = STALL_SECONDS
    worker_processes.start(**ONE_THREAD)
    assert mailbox.receiving.wait(60)  # the group is out, its first mail stalled in DATA

    one_click, took_one_click = _timed(lambda: client.post(
        paths[ONE_CLICK], data={"List-Unsubscribe": "One-Click"},
        environ_base={"REMOTE_ADDR": "198.51.100.1"}, headers={"User-Agent": "MailClient/1"}))
    button, took_button = _timed(lambda: client.post(
        paths[BUTTON], environ_base={"REMOTE_ADDR": "198.51.100.2"},
        headers={"User-Agent": "Browser/2"}))
    hook, took_hook = _timed(lambda: client.post(WEBHOOK, data={
        "type": "unsubscribe", "list": "1", "contact[id]": "7",
        "contact[email]": WEBHOOK_ADDRESS}))
    erasure, took_erasure = _timed(lambda: client.delete(
        f"/v1/contacts?email={ERASED}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}))
    assert erasure.status_code == 200
    [erased] = erasure.get_json()["subscriptions"]
    assert (erased["status_before"], erased["status"]) == ("confirmed", "unsubscribed")
    assert erased["kept_until"] is not None
    assert one_click.status_code == 200 and WITHDRAWN in one_click.get_data(as_text=True)
    assert button.status_code == 303
    assert hook.status_code == 200 and hook.get_json() == {"status": "ok"}
    assert max(took_one_click, took_button, took_hook, took_erasure) < ANSWERED_WITHIN
    # The page after the button's redirect, and a second one-click, say unsubscribed.
    assert WITHDRAWN in client.get(paths[BUTTON]).get_data(as_text=True)
    again = client.post(paths[ONE_CLICK], data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and WITHDRAWN in again.get_data(as_text=True)
    answered = datetime.now(UTC)
    if PG_URL:  # the group still holds the rows: the withdrawals wait in the queue
        assert not mailbox.released.is_set() and len(mailbox.messages) == 0
        assert [r.status for r in _queued(app)] == ["pending"] * 4
        assert {_sub(app, a).status for a in leavers} == {SubscriptionStatus.CONFIRMED}
    else:  # no row locks: applied at once
        assert {_sub(app, a).status for a in leavers} == {SubscriptionStatus.UNSUBSCRIBED}

    mailbox.released.set()  # the relay answers again
    wait_for(lambda: _settled(app), timeout=60)
    time.sleep(0.5)
    assert len(mailbox.to(HUNG)) == 1
    for address in leavers:
        assert mailbox.to(address) == [], address  # no welcome after the withdrawal
    expected = {ONE_CLICK: ("one_click", "198.51.100.1", "MailClient/1"),
                BUTTON: ("link", "198.51.100.2", "Browser/2"),
                WEBHOOK_ADDRESS: ("activecampaign", None, None),
                ERASED: ("operator", None, None)}
    with app.app_context():
        for address, (origin, ip, agent) in expected.items():
            sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
            assert (sub.status, sub.withdrawal_origin) == ("unsubscribed", origin)
            assert sub.first_name is None  # deleted at withdrawal (and erasure)
            assert (sub.erased_at is not None) == (address == ERASED)
            events = list(db.session.scalars(select(ConsentEvent).where(
                ConsentEvent.subscription_id == sub.id).order_by(ConsentEvent.seq)))
            [withdrawal] = [e for e in events if e.kind in ("unsubscribed", "erased")]
            assert (withdrawal.ip, withdrawal.user_agent) == (ip, agent)
            assert withdrawal.at <= answered  # the request's time, not the worker's
            assert "welcome_sent" not in [e.kind for e in events]
            assert db.session.scalar(select(Suppression.id).where(
                Suppression.list_id == sub.list_id,
                Suppression.email_hash == sub.email_hash)) is not None
        assert ledger.verify(db.session).ok
    for row in _queued(app):  # applied, and nothing personal left in the queue
        assert (row.status, row.payload) == ("done", {"processed": True})
