"""Consent to ActiveCampaign and withdrawals back: outbox handlers, the client, inbound events.

Outward, a confirmation queues ``ac_subscribe`` and a withdrawal queues
``ac_unsubscribe`` (subscriptions.py, in the same transaction). Both handlers
decide from the subscription's state when they run, not from the state when
they were queued: an ``ac_subscribe`` that finds the subscription withdrawn
does nothing, so an unsubscribe always wins over a subscribe still queued.

A withdrawal *during* an ``ac_subscribe`` call cannot win either, and does not
wait for it: the handler holds no lock on the subscription while it talks to
ActiveCampaign. After its calls it takes the row lock and reads the state
again; finding it withdrawn, it sends the unsubscribe itself. A withdrawal
committed after that re-read queues an ``ac_unsubscribe`` that runs after the
subscribe call has finished. Either way ActiveCampaign's last word is
"unsubscribed", and a visitor's unsubscribe never waits on ActiveCampaign.

Contacts are upserted by address (``contact/sync``), so a row delivered twice
(a crash between the call and the commit) cannot create a second contact.

Failures become outbox outcomes: 429 and 5xx/network errors retry (429's
``Retry-After`` honoured, otherwise exponential backoff with jitter, up to
``OPTIN_OUTBOX_RETRY_HORIZON_HOURS``); a 4xx retrying cannot fix becomes a
dead letter carrying ActiveCampaign's title and detail. A rejected API key
(401/403) is held, not dead-lettered: every row would fail the same way, and
they all go through by themselves once the key is fixed; it is logged as an
error on each attempt and only dies at the retry horizon like any other
failure.

Inward, :func:`record_inbound` turns an ActiveCampaign event (webhook or
reconcile) into a withdrawal here, origin ``activecampaign``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app
from sqlalchemy import select

from optin.activecampaign.client import (
    STATUS_ACTIVE,
    STATUS_UNSUBSCRIBED,
    ActiveCampaignClient,
    ActiveCampaignError,
    AuthError,
    PermanentError,
    RateLimited,
    TransientError,
)
from optin.activecampaign.throttle import shared_throttle
from optin.config import current_settings
from optin.consent import ledger, subscriptions, withdrawals
from optin.consent.addresses import InvalidAddress, address_hash, normalize_email
from optin.delivery import outbox
from optin.extensions import db
from optin.models import (
    ACTIVE_STATUSES,
    ConsentEvent,
    EventKind,
    MailingList,
    OutboxItem,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from optin.ops import metrics

log = logging.getLogger(__name__)
S = SubscriptionStatus

_CLIENT = "optin.ac_client"
_CLIENT_LOCK = "optin.ac_client_lock"


def init_app(app: Flask) -> None:
    """The lock under which the app builds its client on first use (each app its own)."""
    app.extensions[_CLIENT_LOCK] = threading.Lock()


def client() -> ActiveCampaignClient | None:
    """This process's ActiveCampaign client (one pooled session), or None in dry-run.

    Built once per app from the settings, with the shared throttle that keeps
    every worker together under the account's rate limit.
    """
    settings = current_settings()
    if settings.ac_dry_run:
        return None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with app.extensions[_CLIENT_LOCK]:
        ac = app.extensions.get(_CLIENT)
        if ac is None:
            assert settings.ac_url and settings.ac_api_key
            ac = ActiveCampaignClient(
                settings.ac_url,
                settings.ac_api_key,
                timeout=(3.05, settings.ac_timeout_seconds),
                throttle=shared_throttle(settings.shared_storage, db.engine,
                                         urlsplit(settings.ac_url).netloc, settings.ac_rate_limit),
                on_response=metrics.activecampaign_response,
            )
            app.extensions[_CLIENT] = ac
    return ac


def field_values(sub: Subscription) -> dict[str, str]:
    """The personal fields OPTIN_AC_FIELD_MAP names, as {AC field id: value}; others stay here."""
    mapping = current_settings().ac_field_map
    fields = sub.fields or {}
    return {mapping[name]: str(value) for name, value in fields.items()
            if name in mapping and value not in (None, "")}


#: ActiveCampaign as a destination, for its circuit breaker (``delivery.breaker``).
DESTINATION = "activecampaign"


@contextmanager
def delivery() -> Iterator[None]:
    """Turn the client's exceptions into outbox outcomes (the messages never hold the key).

    ActiveCampaign not answering, answering 5xx or refusing the key is the destination's
    failure (its breaker pauses every sync); a 429 and a 4xx belong to the row. Leaving
    the block without an error says ActiveCampaign took the calls.
    """
    try:
        yield
    except RateLimited as exc:
        raise outbox.RetryLater(str(exc), after=exc.retry_after) from None
    except AuthError as exc:
        log.error("ActiveCampaign refused the API key (%s); fix OPTIN_AC_API_KEY, the sync "
                  "is held until then", exc)
        raise outbox.DestinationDown(DESTINATION,
                                     f"{exc} (held: check OPTIN_AC_API_KEY)") from None
    except PermanentError as exc:
        raise outbox.PermanentFailure(str(exc)) from None
    except TransientError as exc:
        if exc.status is None or exc.status >= 500:
            raise outbox.DestinationDown(DESTINATION, str(exc)) from None
        raise outbox.RetryLater(str(exc), after=exc.retry_after) from None
    except ActiveCampaignError as exc:  # an answer of an unexpected shape
        raise outbox.RetryLater(str(exc), after=getattr(exc, "retry_after", None)) from None
    outbox.destination_reached(DESTINATION)


def _skip(sub: Subscription, action: str, reason: str = "dry-run (OPTIN_AC_URL unset)") -> None:
    log.info("ActiveCampaign sync skipped: would %s subscription %s: %s", action, sub.id, reason)
    ledger.append(sub, EventKind.SYNC_SKIPPED, origin="worker", details={"action": action, "reason": reason})


def _ac_list_id(sub: Subscription, action: str) -> int | None:
    ac_list = sub.mailing_list.ac_list_id
    if ac_list is None:
        log.warning("list %s has no ActiveCampaign list id; subscription %s not synced "
                    "(set it with the operator API or `optin lists`)", sub.mailing_list.slug, sub.id)
        _skip(sub, action, "the list has no ActiveCampaign list id")
    return ac_list


def _synced(sub: Subscription, action: str, contact_id: str, ac_list: int, status: int,
            **extra: Any) -> None:
    sub.ac_contact_id = contact_id
    ledger.append(sub, EventKind.SYNCED, origin="worker", details={
        "action": action, "ac_contact_id": contact_id, "ac_list_id": ac_list, "status": status,
        **extra,
    })


def _locked(item: OutboxItem, *, lock: bool = True) -> Subscription | None:
    if item.subscription_id is None:
        return None
    return db.session.get(Subscription, item.subscription_id, with_for_update=lock,
                          populate_existing=True)


def push_subscribe(item: OutboxItem) -> None:
    """Put a confirmed contact on the list (status 1); nothing if it is no longer confirmed.

    Reads without a lock, calls ActiveCampaign, then locks the row and reads again
    (see the module's docstring): the lock is never held across the calls.
    """
    sub = _locked(item, lock=False)
    if sub is None or sub.status != S.CONFIRMED:
        return
    ac = client()
    ac_list = sub.mailing_list.ac_list_id
    if ac is None or ac_list is None or not sub.email:
        _not_sent(item, ac)
        return
    with delivery():
        contact = ac.sync_contact(sub.email, first_name=sub.first_name, last_name=sub.last_name,
                                  field_values=field_values(sub))
        contact_id = str(contact["id"])
        ac.set_list_status(contact_id, ac_list, STATUS_ACTIVE)
        sub = _locked(item)  # a withdrawal may have committed during the calls
        assert sub is not None
        if sub.status != S.CONFIRMED:
            ac.set_list_status(contact_id, ac_list, STATUS_UNSUBSCRIBED)
            _synced(sub, "unsubscribe", contact_id, ac_list, STATUS_UNSUBSCRIBED,
                    reason="withdrawn while subscribing")
            return
    _synced(sub, "subscribe", contact_id, ac_list, STATUS_ACTIVE)


def _not_sent(item: OutboxItem, ac: ActiveCampaignClient | None) -> None:
    """Ledger why a confirmed subscription is not sent (under the row lock appends need)."""
    sub = _locked(item)
    if sub is None or sub.status != S.CONFIRMED:
        return
    if ac is None:
        _skip(sub, "subscribe")
    elif _ac_list_id(sub, "subscribe") is not None:  # None: logged and ledgered there
        _skip(sub, "subscribe", "no address left")  # erased meanwhile


def _missing_contact(exc: PermanentError) -> bool:
    """A 422 saying the contact id we kept no longer exists (deleted in ActiveCampaign)."""
    return exc.status in (404, 422) and any(
        isinstance(e, dict) and "contact" in str((e.get("source") or {}).get("pointer", ""))
        for e in exc.errors
    )


def _unsubscribe_contact(ac: ActiveCampaignClient, contact_id: str | None, email: str | None,
                         ac_list: int) -> str | None:
    """Set status 2 on the list by contact id, else by address; None if neither is known."""
    if contact_id:
        try:
            ac.set_list_status(contact_id, ac_list, STATUS_UNSUBSCRIBED)
            return contact_id
        except PermanentError as exc:
            if not (_missing_contact(exc) and email):
                raise
    if not email:
        return None
    # Upserting the bare address (no names, no fields) leaves ActiveCampaign a record that
    # blocks re-adding it by import or form, which bulk import honours.
    contact_id = str(ac.sync_contact(email)["id"])
    ac.set_list_status(contact_id, ac_list, STATUS_UNSUBSCRIBED)
    return contact_id


def push_unsubscribe(item: OutboxItem) -> None:
    """Set the contact's status on the list to 2 (unsubscribed); idempotent.

    A row without a subscription comes from reconcile (an address suppressed
    here that ActiveCampaign still lists) and names the contact in its payload.
    """
    if item.subscription_id is None:
        _push_unsubscribe_payload(item.payload)
        return
    sub = _locked(item)
    if sub is None or sub.status in ACTIVE_STATUSES:
        return
    if sub.confirmed_at is None and sub.ac_contact_id is None:
        return  # never confirmed, so never sent: ActiveCampaign has nothing to withdraw
    ac = client()
    if ac is None:
        _skip(sub, "unsubscribe")
        return
    ac_list = _ac_list_id(sub, "unsubscribe")
    if ac_list is None:
        return
    with delivery():
        contact_id = _unsubscribe_contact(ac, sub.ac_contact_id, sub.email, ac_list)
    if contact_id is None:
        _skip(sub, "unsubscribe", "no address or ActiveCampaign contact id left")
        return
    _synced(sub, "unsubscribe", contact_id, ac_list, STATUS_UNSUBSCRIBED)


def _push_unsubscribe_payload(payload: dict[str, Any]) -> None:
    ac = client()
    contact_id, ac_list = payload.get("ac_contact_id"), payload.get("ac_list_id")
    if ac is None or not contact_id or not ac_list:
        log.info("ActiveCampaign sync skipped: unsubscribe contact %s from list %s", contact_id, ac_list)
        return
    with delivery():
        ac.set_list_status(str(contact_id), int(ac_list), STATUS_UNSUBSCRIBED)


# -- inbound: withdrawals and bounces reported by ActiveCampaign ----------------------------

#: ActiveCampaign event type -> the ledger kind of the withdrawal it means.
WITHDRAWALS = {"unsubscribe": EventKind.UNSUBSCRIBED, "spam": EventKind.COMPLAINT,
               "complaint": EventKind.COMPLAINT, "spam_complaint": EventKind.COMPLAINT,
               "abuse": EventKind.COMPLAINT}
BOUNCES = {"bounce"}


def parse_ac_time(raw: str | None) -> datetime | None:
    """ActiveCampaign's ``2024-05-02T08:41:07-05:00`` (or ``2013-01-01 12:00:00``) in UTC.

    A time without an offset is taken as UTC; None if it cannot be read or is out of
    range (the event is then recorded at the time it was received).
    """
    if not raw or not raw.strip():
        return None
    try:
        when = datetime.fromisoformat(raw.strip())
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):  # not a time, or one UTC cannot hold (year 1, 9999)
        return None


@dataclass
class InboundEvent:
    """An event from ActiveCampaign about one address on one list (None: every synced list)."""

    type: str
    email: str
    ac_list_id: int | None
    at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)


def record_inbound(event: InboundEvent) -> int:
    """Record a withdrawal, complaint or bounce ActiveCampaign reported; return rows changed.

    One transaction per subscription, each under its row lock. Idempotent: a
    second delivery finds nothing active to withdraw, and a bounce already
    recorded with the same time is not recorded again. Unknown addresses and
    lists change nothing. The withdrawal queues ``ac_unsubscribe`` like any
    other, which keeps both sides equal and harms nothing.

    A bounce is recorded, not treated as a withdrawal: it says the mailbox
    failed, not that the person took back consent; ActiveCampaign already
    stops mailing a hard-bounced contact (list status 3). A spam complaint
    is a withdrawal. Tried again when a concurrent writer (a worker appending to
    the same ledger) collides: ActiveCampaign never sends a failed webhook again.
    """
    return _record_inbound(event)  # each list's transaction is tried again on a collision


def _record_inbound(event: InboundEvent) -> int:
    kind = WITHDRAWALS.get(event.type)
    if kind is None and event.type not in BOUNCES:
        return 0
    try:
        email = normalize_email(event.email)
    except InvalidAddress:
        return 0
    digest = address_hash(email, current_settings().hash_key)
    query = select(MailingList.id).where(MailingList.ac_list_id.is_not(None))
    if event.ac_list_id is not None:
        query = query.where(MailingList.ac_list_id == event.ac_list_id)
    changed = 0
    now = utcnow()
    for list_id in db.session.scalars(query).all():
        # A delivery holding the subscription makes the report wait in the queue, not
        # the webhook's answer (consent.withdrawals).
        changed += withdrawals.now_or_queued(
            partial(_record_on_list, list_id, digest, kind, event, now),
            partial(_queue_on_list, list_id, digest, kind, event, now))
    return changed


def _active_on(list_id: int, digest: str, *, lock: bool) -> Subscription | None:
    query = (select(Subscription)
             .where(Subscription.list_id == list_id, Subscription.email_hash == digest,
                    Subscription.status.in_(ACTIVE_STATUSES))
             .execution_options(populate_existing=True))
    return db.session.scalar(query.with_for_update() if lock else query)


def _record_on_list(list_id: int, digest: str, kind: EventKind | None, event: InboundEvent,
                    now: datetime) -> int:
    withdrawals.bound_lock_wait()
    sub = _active_on(list_id, digest, lock=True)
    if sub is None:
        db.session.rollback()
        return 0
    withdrawals.apply_queued(sub)  # what a delivery made wait before this came first
    if kind is not None and sub.status not in ACTIVE_STATUSES:
        db.session.commit()
        return 1
    at, note = event_time(event.at, sub, now)
    details = {**event.details, **note}
    changed = 0
    if kind is not None:
        subscriptions.withdraw(sub, origin="activecampaign", at=at, details=details, kind=kind)
        changed = 1
    elif not _already_recorded(sub, EventKind.BOUNCED, details):
        ledger.append(sub, EventKind.BOUNCED, origin="activecampaign", at=at, details=details)
        changed = 1
    db.session.commit()
    return changed


def _queue_on_list(list_id: int, digest: str, kind: EventKind | None, event: InboundEvent,
                   now: datetime) -> int:
    """The subscription is held by a delivery: queue the report (read without a lock)."""
    sub = _active_on(list_id, digest, lock=False)
    if sub is None:
        db.session.rollback()
        return 0
    at, note = event_time(event.at, sub, now)
    withdrawals.queue(sub.id, withdrawals.Withdrawal(
        origin="activecampaign", client=subscriptions.Client(), at=at,
        kind=kind or EventKind.BOUNCED, details={**event.details, **note}))
    db.session.commit()
    return 1


def event_time(reported: datetime | None, sub: Subscription,
               received: datetime) -> tuple[datetime, dict[str, str]]:
    """When to record what ActiveCampaign reported: its own time if that can be true, else
    the time it reached us, with a note saying why. A time is never invented.

    ActiveCampaign's time can be true only inside the current consent cycle (from the
    signup, or the confirmation, until now). A report dated before it (a delayed or replayed
    webhook, a wrong clock) is still recorded, since a withdrawal must never be lost, but at
    the time it was received, and the ledger's times keep running with its order.
    """
    start = sub.confirmed_at or sub.created_at
    if reported is None:
        return received, {"time_source": "received (no time reported)"}
    if reported < start:
        return received, {"time_source": "received (the reported time is before this consent)"}
    if reported > received:
        return received, {"time_source": "received (the reported time is in the future)"}
    return reported, {}


def _already_recorded(sub: Subscription, kind: EventKind, details: dict[str, Any]) -> bool:
    """Whether this report (by ActiveCampaign's own time for it) is on the ledger already."""
    reported = details.get("reported_at")
    return reported is not None and any(
        event.details.get("reported_at") == reported
        for event in db.session.scalars(select(ConsentEvent).where(
            ConsentEvent.subscription_id == sub.id, ConsentEvent.kind == kind)))
