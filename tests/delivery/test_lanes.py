"""Delivery lanes: each delivery thread of a worker claims and delivers on its own, so a
slow share never holds up another thread's next mail (issue 14, slow relay)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from optin.delivery.notifier import Notifier
from optin.delivery.worker import LANE_ROWS
from optin.extensions import db
from optin.models import OutboxItem, OutboxKind, OutboxStatus

from ..conftest import PG_URL, signup, wait_for

#: How long the relay stalls on the slow recipient at most (below the mailer's 30 s timeout).
STALL_SECONDS = 25.0


def _recipients(mailbox) -> list[str]:
    with mailbox.lock:
        return [r for _, rcpts in mailbox.envelopes for r in rcpts]


def _stalling(mailbox, prefix: str) -> Any:
    """The test relay holds the RCPT of every recipient starting with ``prefix`` until
    ``mailbox.released`` is set (a recipient domain the relay waits on)."""

    async def handle_rcpt(server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if address.startswith(prefix):
            deadline = time.monotonic() + STALL_SECONDS
            while not mailbox.released.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    return handle_rcpt


@pytest.mark.skipif(not PG_URL, reason="SQLite runs one delivery thread")
def test_a_stalled_recipient_holds_up_only_its_own_lane(
        app, client, newsletter, mailbox, worker_processes):
    """One recipient stalls the relay for 25 s. Its lane's mails wait behind it; every
    other mail goes out meanwhile. With one batch over all threads, waiting for its
    slowest share, the batch's other 16 mails went and the other 48 waited the 25 s."""
    others = [f"quick{i}@example.org" for i in range(4 * LANE_ROWS)]
    assert signup(client, "slow@example.org").status_code == 202  # the first claimed
    for address in others:
        assert signup(client, address).status_code == 202
    mailbox.handle_RCPT = _stalling(mailbox, "slow")  # type: ignore[attr-defined]
    try:
        worker_processes.start(OPTIN_WORKER_THREADS="2")
        # All but the stalled lane's own claim (the slow row and at most LANE_ROWS - 1
        # behind it) leave while the relay still holds the slow one.
        wait_for(lambda: len(_recipients(mailbox)) >= len(others) - (LANE_ROWS - 1),
                 timeout=STALL_SECONDS - 5, interval=0.1)
        assert "slow@example.org" not in _recipients(mailbox)  # still stalled
        mailbox.released.set()
        wait_for(lambda: len(_recipients(mailbox)) == len(others) + 1, timeout=30)
    finally:
        mailbox.released.set()
        del mailbox.handle_RCPT  # type: ignore[attr-defined]
    assert sorted(_recipients(mailbox)) == sorted([*others, "slow@example.org"])  # once each

    def undone() -> int:  # the last group commits just after its mails arrived
        with app.app_context():
            return int(db.session.scalar(select(func.count()).where(
                OutboxItem.kind == OutboxKind.CONFIRM_MAIL,
                OutboxItem.status != OutboxStatus.DONE)) or 0)

    wait_for(lambda: undone() == 0, timeout=10)


@pytest.mark.skipif(not PG_URL, reason="SQLite runs one delivery thread")
def test_a_stopped_worker_finishes_every_lane_and_leaves_no_row_claimed(
        app, client, newsletter, mailbox, worker_processes):
    """SIGTERM while all lanes are busy on a slow relay: each finishes the mail in hand,
    hands its other rows back at once (no lease to wait out), and the process ends."""
    for i in range(40):
        assert signup(client, f"term{i}@example.org").status_code == 202
    mailbox.delay = 0.3
    proc = worker_processes.start(OPTIN_WORKER_THREADS="3")
    wait_for(lambda: len(_recipients(mailbox)) >= 3, timeout=30)
    proc.terminate()
    assert proc.wait(20) == 0
    with app.app_context():
        claimed = db.session.scalar(select(func.count()).where(
            OutboxItem.status == OutboxStatus.PENDING, OutboxItem.claimed_by.is_not(None)))
        pending = db.session.scalar(select(func.count()).where(
            OutboxItem.status == OutboxStatus.PENDING))
    assert claimed == 0
    assert 0 < pending < 40  # stopped mid-way: some went, the rest wait unclaimed


def test_every_waiting_lane_is_woken_and_a_wake_up_before_the_wait_is_not_lost():
    notifier = Notifier(None)
    woken: list[bool] = []
    seen = notifier.generation()
    waiters = [threading.Thread(target=lambda: woken.append(notifier.wait(10, since=seen)))
               for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    notifier.wake()
    for waiter in waiters:
        waiter.join(5)
    assert woken == [True, True, True] and time.monotonic() - started < 5
    seen = notifier.generation()
    notifier.wake()  # between a lane's empty claim and its wait
    assert notifier.wait(10, since=seen) is True
    assert notifier.wait(0.1, since=notifier.generation()) is False  # nothing new
