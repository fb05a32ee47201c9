"""Which mail goes out when: the outbox handlers for confirm, welcome, goodbye.

Each handler runs in the worker's transaction for its outbox row, looks at the
subscription as it is *now* (a withdrawal since the enqueue cancels the mail),
sends, and records what was sent in the ledger: Message-ID, subject, template
version and hashes of the bodies. A confirmation mail is kept as it left, its
link token and the names it quotes marked (``consent.mailcopies``). It is
written from the signup it was queued for (its locale, consent text and name,
see ``consent.signups``), and its link names that signup.
"""

from __future__ import annotations

import hashlib
import logging
from email.errors import MessageError
from email.utils import formataddr, parseaddr
from functools import partial
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from optin.config import current_settings
from optin.consent import addresses, ledger, lists, mailcopies, signups
from optin.consent.tokens import CONFIRM, UNSUBSCRIBE, make_token
from optin.delivery import groups, intents, outbox
from optin.delivery.mailer import (
    Backend,
    MailTemplates,
    RelayUnavailable,
    Unsendable,
    build_message,
)
from optin.extensions import db
from optin.models import (
    EventKind,
    OutboxItem,
    Signup,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from optin.ops import logs, metrics
from optin.ops.dates import local_datetime
from optin.ops.identity import identity

S = SubscriptionStatus


log = logging.getLogger(__name__)

#: The destination of every mail, for its circuit breaker (``delivery.breaker``).
DESTINATION = groups.MAIL_DESTINATION


def confirm_url(sub: Subscription, signup: Signup | None = None) -> str:
    """The link that confirms ``signup`` (without one: the subscription's first signup)."""
    settings = current_settings()
    token = make_token(settings.secret_key, CONFIRM, sub.id, sub.nonce,
                       signup.seq if signup else None)
    return f"{settings.base_url}/confirm/{token}"


def unsubscribe_url(sub: Subscription) -> str:
    settings = current_settings()
    token = make_token(settings.secret_key, UNSUBSCRIBE, sub.id, sub.nonce)
    return f"{settings.base_url}/unsubscribe/{token}"


def _brand() -> dict[str, Any]:
    return current_app.extensions["optin.brand"]


#: The ledger event each mail template leaves when the relay took the mail.
SENT = {"confirm": EventKind.CONFIRMATION_SENT, "welcome": EventKind.WELCOME_SENT,
        "goodbye": EventKind.GOODBYE_SENT, "unsubscribe_link": EventKind.UNSUBSCRIBE_LINK_SENT}


def _send(sub: Subscription, name: str, context: dict[str, Any], headers: dict[str, str],
          signup: Signup | None = None) -> None:
    """Render and send the mail ``name`` with the subscription's values, or with those of
    ``signup`` (a confirmation mail: what that signup entered)."""
    entered: Signup | Subscription = signup if signup is not None else sub
    to_email = entered.email or sub.email
    if not to_email:
        raise outbox.PermanentFailure(f"subscription {sub.id} has no address left to mail")
    settings = current_settings()
    to_email = _recipient(to_email, settings.smtputf8)
    templates: MailTemplates = current_app.extensions["optin.mail_templates"]
    backend: Backend = current_app.extensions["optin.mail_backend"]
    mailing_list = sub.mailing_list
    consent = entered.consent_text
    site = identity(mailing_list, settings)
    rendered = templates.render(name, entered.locale, {
        "list_name": site["list_name"],
        "first_name": entered.first_name,
        "consent_text": consent.text if consent else None,
        "brand": _brand(),
        "site": site,
        "locale": entered.locale,
        **context,
    })
    try:
        message = build_message(
            rendered,
            to_email=to_email,
            to_name=" ".join(filter(None, (entered.first_name, entered.last_name))) or None,
            sender=_sender(mailing_list.sender or settings.mail_from, site["sender_name"]),
            reply_to=mailing_list.reply_to,
            headers=headers,
        )
    except (UnicodeError, ValueError, MessageError) as exc:
        # The same row builds the same mail on every attempt: no retry can help. The
        # exception's text is left out, since a header error may quote the header.
        raise outbox.PermanentFailure(f"the mail cannot be built ({type(exc).__name__})") from None
    kind = SENT[name]
    details = {
        "message_id": str(message["Message-ID"]),
        "subject": rendered.subject,
        "template": rendered.template,
        "template_sha256": rendered.template_sha256,
        "text_sha256": hashlib.sha256(rendered.text.encode()).hexdigest(),
        "html_sha256": hashlib.sha256(rendered.html.encode()).hexdigest(),
        **({"signup_seq": signup.seq} if signup is not None else {}),
    }
    copy = _copy(rendered, context, entered) if name == "confirm" else None
    if copy is not None:
        details["copy"] = copy.evidence()
    collecting = groups.COLLECTING.get()
    if collecting is not None:  # the worker's group sends it and records it (groups.py)
        collecting.append(groups.Mail(name, sub.id, kind, details, message, copy, sub.status,
                                      sub))
        return
    # On record before the relay sees it: a worker that dies after the relay took the mail
    # still leaves its Message-ID for the proof (intents.py).
    intent = intents.record(sub.id, kind, details)
    try:
        backend.send(message)
    except Unsendable as exc:
        intents.not_sent(intent)
        metrics.mail_failed(name)
        raise outbox.PermanentFailure(str(exc)) from None
    except RelayUnavailable as exc:  # the relay, not this mail: its breaker counts it
        intents.not_sent(intent)
        metrics.mail_failed(name)
        raise outbox.DestinationDown(DESTINATION, f"mail not sent: {exc}") from None
    except OSError as exc:  # refused for this mail (a 4xx/5xx to RCPT or DATA): retry later
        intents.not_sent(intent)
        metrics.mail_failed(name)
        raise outbox.RetryLater(f"mail not sent: {smtp_error(exc)}") from None
    metrics.mail_delivered(name)
    enqueued = outbox.ENQUEUED_AT.get()
    if enqueued is not None:
        metrics.mail_time_to_send(name, (utcnow() - enqueued).total_seconds())
    outbox.destination_reached(DESTINATION)
    outbox.keep_if_rolled_back(partial(_record_sent, sub.id, kind, details, intent, copy))
    row = ledger.append_now(sub, kind, origin="worker", details=details)
    if copy is not None:
        _keep_copy(sub.id, copy, details, row["at"])
    intents.done(intent)


def smtp_error(exc: OSError) -> str:
    """The relay's refusal with every address and secret in it replaced by its pseudonym,
    as the logs show it: a reply often quotes the address (``<anna@example.org>: Recipient
    address rejected``), and a row's last error is shown by ``optin outbox list``."""
    return logs.scrubber(current_settings())(f"{type(exc).__name__}: {exc}")


def _copy(rendered: Any, context: dict[str, Any],
          entered: Signup | Subscription) -> mailcopies.Copy | None:
    """The mail's copy for the proof, link token and names marked; None (logged) if it
    cannot be made, for the mail has left and its record must not fail with it."""
    token = str(context.get("confirm_url", "")).rpartition("/")[2]
    try:
        return mailcopies.take(
            {"subject": rendered.subject, "text": rendered.text, "html": rendered.html},
            tokens=[token], names={"first_name": entered.first_name,
                                   "last_name": entered.last_name})
    except Exception as exc:
        log.error("no copy kept of a %s mail: %s", rendered.template, type(exc).__name__)
        return None


def _keep_copy(subscription_id: int, copy: mailcopies.Copy, details: dict[str, Any],
               at: Any) -> None:
    mailcopies.keep(copy, subscription_id=subscription_id, message_id=details["message_id"],
                    template=details["template"], sent_at=at)


def _sender(address: str, display_name: str) -> str:
    """``address`` with ``display_name`` when it names none: the list's sender name, else the
    brand's, so inboxes show who writes rather than ``newsletter@…``."""
    name, addr = parseaddr(address)
    return address if name or not addr else formataddr((display_name, addr))


def _signup_page(sub: Subscription) -> str | None:
    """Where to sign up again: the form the signup came from (if it is one of the list's
    pages), else the list's website."""
    return lists.back_page(sub.mailing_list, sub.source_url, None, current_settings().base_url)


def _recipient(stored: str, smtputf8: str) -> str:
    """The stored address as the relay gets it (domain in ASCII), or a dead letter: an
    address no relay can take, or one that needs SMTPUTF8 under ``OPTIN_SMTPUTF8=refuse``
    (a row from before that rule, or from an import)."""
    try:
        address = addresses.mailable(stored)
    except addresses.InvalidAddress:
        raise outbox.PermanentFailure("the stored address is not one a relay can take") from None
    if addresses.needs_smtputf8(address) and smtputf8 != addresses.SMTPUTF8_WHEN_OFFERED:
        raise outbox.PermanentFailure("the address needs SMTPUTF8, and OPTIN_SMTPUTF8 is refuse")
    return address


def _record_sent(subscription_id: int, kind: EventKind, details: dict[str, Any],
                 intent: int | None = None, copy: mailcopies.Copy | None = None) -> None:
    """The sent mail's ledger event, written after its delivery's transaction failed."""
    intents.done(intent)
    sub = db.session.get(Subscription, subscription_id, with_for_update=True,
                         populate_existing=True)
    if sub is None:
        log.error("mail %s left for a subscription that is gone", details["message_id"])
        return
    event = ledger.append(sub, kind, origin="worker",
                          details={**details, "recorded": "after its delivery's transaction failed"})
    if copy is not None:
        _keep_copy(sub.id, copy, details, event.at)


def _subscription(item: OutboxItem) -> Subscription | None:
    """The subscription, locked, with its list and consent text in the same query (in a
    group: as the group locked it with its neighbours', ``groups.Preloaded``)."""
    if item.subscription_id is None:
        return None
    preloaded = groups.PRELOADED.get()
    if preloaded is not None and item.subscription_id in preloaded.subscriptions:
        return preloaded.subscriptions[item.subscription_id]
    return db.session.scalar(
        select(Subscription).where(Subscription.id == item.subscription_id)
        .options(joinedload(Subscription.mailing_list), joinedload(Subscription.consent_text))
        .with_for_update(of=Subscription)
    )


def _list_unsubscribe_headers(sub: Subscription) -> dict[str, str]:
    """RFC 2369 + RFC 8058: the one-click button mail clients show."""
    return {
        "List-Unsubscribe": f"<{unsubscribe_url(sub)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def send_confirmation(item: OutboxItem) -> None:
    """The double-opt-in mail for the signup the row names (a row queued before rows named
    one: the subscription's first signup)."""
    sub = _subscription(item)
    if sub is None or sub.status != S.PENDING:
        return  # confirmed or withdrawn meanwhile: nothing to ask any more
    seq = (item.payload or {}).get("signup_seq")
    preloaded = groups.PRELOADED.get()
    signup = (preloaded.signup(sub.id, seq) if preloaded is not None
              and sub.id in preloaded.subscriptions else signups.find(sub.id, seq))
    if signup is None and seq is not None:
        raise outbox.PermanentFailure(f"subscription {sub.id} has no signup #{seq}")
    _send(sub, "confirm", {
        "confirm_url": confirm_url(sub, signup),
        "ttl_hours": current_settings().confirm_ttl_hours,
    }, headers={}, signup=signup)


def send_welcome(item: OutboxItem) -> None:
    sub = _subscription(item)
    if sub is None or sub.status != S.CONFIRMED:
        return
    _send(sub, "welcome", {"unsubscribe_url": unsubscribe_url(sub),
                           "confirmed_at": local_datetime(sub.confirmed_at, sub.locale)},
          headers=_list_unsubscribe_headers(sub))


def send_goodbye(item: OutboxItem) -> None:
    sub = _subscription(item)
    # Erased since the unsubscribe queued it: someone who asked for erasure gets no goodbye
    # (checked here, under the subscription's lock, not by deleting the row, which a worker
    # may hold while it waits for that lock).
    if sub is None or sub.status != S.UNSUBSCRIBED or sub.erased_at is not None:
        return
    _send(sub, "goodbye", {"signup_url": _signup_page(sub)}, headers={})


def send_unsubscribe_link(item: OutboxItem) -> None:
    """The fresh unsubscribe link someone asked for on a broken link's page (consent.relink)."""
    sub = _subscription(item)
    if sub is None or sub.status != S.CONFIRMED:
        return  # withdrawn meanwhile: nothing left to leave
    _send(sub, "unsubscribe_link", {"unsubscribe_url": unsubscribe_url(sub)},
          headers=_list_unsubscribe_headers(sub))
