"""Several delivery threads in one worker: unsubscribe still wins over a queued welcome
mail and subscribe, and one row's permanent failure leaves its neighbours alone (issue 14)."""

from __future__ import annotations

from sqlalchemy import func, select

from optin.delivery.notifications import unsubscribe_url
from optin.delivery.worker import Worker
from optin.extensions import db
from optin.models import OutboxItem, OutboxKind, Subscription

from ..conftest import deliver, links, refused_recipients, signup, wait_for


def _rows(app) -> dict[str, list[str]]:
    with app.app_context():
        found: dict[str, list[str]] = {}
        for row in db.session.scalars(select(OutboxItem).order_by(OutboxItem.id)):
            found.setdefault(row.kind, []).append(row.status)
        return found


def test_an_unsubscribe_before_the_worker_runs_wins_over_the_queued_welcome_and_sync(
        ac_newsletter, ac_app, client, mailbox, fake_ac):
    addresses = [f"gone{i}@example.org" for i in range(4)]
    for address in addresses:
        assert signup(client, address).status_code == 202
    deliver(ac_app)
    for address in addresses:
        [mail] = mailbox.to(address)
        client.post(links(mail)["confirm"])  # queues the welcome mail and the subscribe
    for address in addresses:  # withdrawn (one-click) before any of it is delivered
        with ac_app.app_context():
            sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
            path = unsubscribe_url(sub).split("newsletter.test", 1)[1]
        assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    mailbox.clear()
    worker = Worker(ac_app, threads=3)
    with ac_app.app_context():
        while worker.run_once():
            pass
    worker.close()
    assert mailbox.messages == []  # no welcome mail, and no goodbye (the list has none)
    assert _rows(ac_app)["welcome_mail"] == ["done"] * 4
    # Never subscribed in ActiveCampaign: only the withdrawal's status 2 went out.
    assert not any(r.endpoint == "contactLists" and r.json["contactList"]["status"] == 1
                   for r in fake_ac.requests)
    assert [fake_ac.contact_status(a, 1) for a in addresses] == [2] * 4


def test_a_dead_letter_in_a_batch_leaves_its_neighbours_alone(app, client, newsletter,
                                                              mailbox):
    """Rows of one claimed batch, over three threads: the refused ones fail alone."""
    addresses = [f"{'bad' if i % 3 == 0 else 'good'}{i}@example.org" for i in range(9)]
    with refused_recipients(mailbox, "bad"):
        for address in addresses:
            signup(client, address)
        worker = Worker(app, threads=3)
        with app.app_context():
            assert worker.run_once() == 9
        worker.close()
    assert sorted(_rows(app)["confirm_mail"]) == ["done"] * 6 + ["pending"] * 3
    assert sorted(r for _, rcpts in mailbox.envelopes for r in rcpts) == sorted(
        a for a in addresses if a.startswith("good"))


def test_a_backlog_of_syncs_never_holds_up_a_confirmation_mail(
        app, ac_newsletter, confirmed, client, mailbox, worker_processes):
    """ActiveCampaign's backlog (a backfill, the syncs an outage held) is due before a
    signup that comes after it; claimed together, a batch of 64 syncs at four calls a
    second kept the next confirmation mail waiting 30 s. Now a batch takes a few of them
    beside the rest, and the mail goes out while the backlog still drains at its pace."""
    confirmed("ada@example.org")
    with app.app_context():
        ada = db.session.scalar(select(Subscription.id))
        db.session.add_all([OutboxItem.pending(OutboxKind.AC_SUBSCRIBE, subscription_id=ada)
                            for _ in range(100)])
        db.session.commit()
    assert signup(client, "late@example.org").status_code == 202
    worker_processes.start(OPTIN_AC_RATE_LIMIT="4")
    wait_for(lambda: mailbox.to("late@example.org"), timeout=20)
    with app.app_context():
        left = db.session.scalar(select(func.count()).where(
            OutboxItem.kind == OutboxKind.AC_SUBSCRIBE, OutboxItem.status == "pending"))
    assert left >= 50, left  # the mail did not wait for the backlog
