"""Requests and workers at the same time: racing signups, a confirm racing an
unsubscribe, workers sharing the outbox, a web request colliding with a worker
on one ledger.

The races run as real concurrent requests: threads released together by a
``threading.Barrier``, each request in its own app context (its own session and
connection). They are meant for PostgreSQL, where the requests truly overlap;
on SQLite, whose writers take turns, they still must come out right.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from optin.consent import ledger
from optin.consent.tokens import UNSUBSCRIBE, make_token
from optin.extensions import db
from optin.models import ConsentEvent, MailingList, OutboxItem, Subscription

from .conftest import PG_URL, SECRET, deliver, signup, wait_for

ROUNDS = 6
WEBHOOK_SECRET = "webhook-secret-0123456789"  # conftest's OPTIN_AC_WEBHOOK_SECRET


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released at the same moment; return their results."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], Any]) -> None:
        barrier.wait(timeout=10)
        try:
            results[i] = call()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def _subscriptions(app, address: str) -> list[Subscription]:
    with app.app_context():
        subs = db.session.scalars(select(Subscription).where(Subscription.email == address)).all()
        db.session.expunge_all()
        return list(subs)


def _kinds(app, sub_id: int) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(ConsentEvent.kind).where(
            ConsentEvent.subscription_id == sub_id).order_by(ConsentEvent.seq)))


def test_simultaneous_signups_make_one_subscription_and_one_mail(app, newsletter, mailbox):
    for i in range(ROUNDS):
        address = f"twice{i}@example.org"
        answers = race(partial(signup, app.test_client(), address, first_name="A"),
                       partial(signup, app.test_client(), address, first_name="B"))
        assert [a.status_code for a in answers] == [202, 202]
        [sub] = _subscriptions(app, address)
        with app.app_context():
            mails = db.session.scalar(select(func.count()).select_from(OutboxItem).where(
                OutboxItem.subscription_id == sub.id, OutboxItem.kind == "confirm_mail"))
        assert mails == 1
        assert sorted(_kinds(app, sub.id)) == ["signup_repeated", "signup_requested"]
    deliver(app)
    for i in range(ROUNDS):
        assert len(mailbox.to(f"twice{i}@example.org")) == 1


def test_confirm_racing_unsubscribe_ends_unsubscribed_everywhere(ac_app, ac_newsletter, signed_up,
                                                                 runner, fake_ac):
    for i in range(ROUNDS):
        address = f"race{i}@example.org"
        confirm_path = signed_up(address)
        [sub] = _subscriptions(ac_app, address)
        unsubscribe_path = f"/unsubscribe/{make_token(SECRET, UNSUBSCRIBE, sub.id, sub.nonce)}"
        confirmed, unsubscribed = race(partial(ac_app.test_client().post, confirm_path),
                                       partial(ac_app.test_client().post, unsubscribe_path))
        assert unsubscribed.status_code == 303  # POST-redirect-GET
        assert confirmed.status_code in (303, 200)  # 200: the withdrawal came first ("ended")
        deliver(ac_app)

        [sub] = _subscriptions(ac_app, address)
        assert sub.status == "unsubscribed"
        kinds = _kinds(ac_app, sub.id)
        assert kinds.count("unsubscribed") == 1
        # 303: the click was queued. The worker applied it before the withdrawal, or found
        # the subscription withdrawn (its nonce changed) and refused it: withdrawal wins.
        if "confirmed" in kinds:  # confirmed, then unsubscribed
            assert confirmed.status_code == 303
            assert kinds.index("confirmed") < kinds.index("unsubscribed")
            assert fake_ac.contact_status(address, 1) == 2  # ActiveCampaign's last word
        else:
            assert fake_ac.contact(address) is None  # never confirmed, never sent
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (FOR UPDATE SKIP LOCKED across "
                                       "processes)")
def test_worker_processes_share_the_outbox_without_double_delivery(app, app_config, client,
                                                                   newsletter, mailbox):
    """Two real ``optin worker`` processes drain one outbox (threads: test_outbox.py)."""
    addresses = [f"proc{i}@example.org" for i in range(40)]
    for address in addresses:
        assert signup(client, address).status_code == 202
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIN_")}
    env.update(app_config, PYTHONPATH=os.getcwd(), OPTIN_WORKER_POLL_SECONDS="0.1")
    workers = [subprocess.Popen([sys.executable, "-m", "optin", "worker"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        wait_for(lambda: len(mailbox.envelopes) >= len(addresses), timeout=60)
    finally:  # the workers stop before the count: a double delivery would be in by then
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.wait(20)
    recipients = sorted(r for _, rcpts in mailbox.envelopes for r in rcpts)
    assert recipients == sorted(addresses)
    with app.app_context():
        sent = db.session.scalars(select(ConsentEvent.subscription_id).where(
            ConsentEvent.kind == "confirmation_sent")).all()
        assert len(sent) == len(set(sent)) == len(addresses)
        assert ledger.verify(db.session).ok


@pytest.fixture
def worker_appends_first(app):
    """Before the next web request writes, a worker appends to the same subscription's
    ledger and commits: the interleaving SQLite allows, since it takes no row locks."""

    def arm(subscription_id: int) -> None:
        fired: list[bool] = []

        def before_flush(session: Session, *_: Any) -> None:
            if fired:
                return
            fired.append(True)
            with app.app_context():  # another session, another connection: the worker
                sub = db.session.get(Subscription, subscription_id, with_for_update=True)
                ledger.append(sub, "sync_skipped", origin="worker", details={"action": "test"})
                db.session.commit()

        def before_write(state: Any) -> None:
            # Hot paths write with Core statements through the session, not a flush.
            if not state.is_select:
                before_flush(state.session)

        event.listen(Session, "before_flush", before_flush)
        event.listen(Session, "do_orm_execute", before_write)
        armed.extend([("before_flush", before_flush), ("do_orm_execute", before_write)])

    armed: list[tuple[str, Callable[..., None]]] = []
    yield arm
    for name, fn in armed:
        event.remove(Session, name, fn)


@pytest.mark.skipif(bool(PG_URL), reason="SQLite only: on PostgreSQL the request holds the "
                                         "row lock, so the worker waits (the races above)")
@pytest.mark.parametrize(("action", "recorded"), [("confirm", "confirmed"),
                                                  ("unsubscribe", "unsubscribed"),
                                                  ("webhook", "unsubscribed")])
def test_a_request_colliding_with_a_worker_on_the_ledger_is_tried_again(
        app, client, newsletter, signed_up, runner, worker_appends_first, action, recorded):
    confirm_path = signed_up("ledger@example.org")
    [sub] = _subscriptions(app, "ledger@example.org")
    form = None
    if action == "confirm":
        path = confirm_path
    elif action == "unsubscribe":
        path = f"/unsubscribe/{make_token(SECRET, UNSUBSCRIBE, sub.id, sub.nonce)}"
    else:
        with app.app_context():
            db.session.get(MailingList, newsletter["id"]).ac_list_id = 1
            db.session.commit()
        path = f"/webhooks/activecampaign?secret={WEBHOOK_SECRET}"
        form = {"type": "unsubscribe", "list": "1", "contact[email]": "ledger@example.org"}
    worker_appends_first(sub.id)

    answer = client.post(path, data=form).status_code
    # not a 500 (duplicate ledger seq); a button's answer is POST-redirect-GET's 303
    assert answer == (200 if form else 303)

    assert _kinds(app, sub.id)[-2:] == ["sync_skipped", recorded]
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output
