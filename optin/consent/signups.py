"""Signup records: what each signup request entered, and which one a link confirms.

Anyone who knows an address can sign it up again while its confirmation is
pending. So every request keeps its own record (locale, consent text, names,
fields, source), tied to its ledger event by ``seq``; the confirmation mail
sent for a signup carries that ``seq`` in its link, and confirming copies
exactly that signup's values onto the subscription. A later signup never
changes what an earlier link confirms.

A link made before links named their signup confirms the subscription's first
record (migration 0003 gave each subscription of that time the record of the
values it then held).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, null, select, update

from optin.consent.lists import TextSnapshot
from optin.extensions import db
from optin.models import Signup, Subscription

_SIGNUPS = Signup.__table__
_COLUMNS = ("subscription_id", "seq", "created_at", "email", "locale", "consent_text_id",
            "first_name", "last_name", "fields", "source_url")
#: The values a confirmation copies from its signup onto the subscription.
CONFIRMED_VALUES = ("email", "locale", "consent_text_id", "first_name", "last_name", "fields",
                    "source_url")
#: What a withdrawal or an erasure deletes at once (the rest is proof until it lapses).
PERSONAL = ("first_name", "last_name", "fields")


def insert(prefix: str) -> Any:
    """One signup record as a plain INSERT, for writers without the ORM (the signup's
    fast path); parameters from :func:`row` with ``prefix`` before each name."""
    return _SIGNUPS.insert().values({
        name: bindparam(prefix + name, type_=_SIGNUPS.c[name].type) for name in _COLUMNS})


def row(subscription_id: int, seq: int, at: datetime, email: str, text: TextSnapshot,
        personal: dict[str, Any]) -> dict[str, Any]:
    """The column values of the signup whose ledger event is ``seq``."""
    return {"subscription_id": subscription_id, "seq": seq, "created_at": at, "email": email,
            "locale": text.locale, "consent_text_id": text.id,
            **{k: personal.get(k) for k in ("first_name", "last_name", "fields", "source_url")}}


def record(subscription_id: int, seq: int, at: datetime, email: str, text: TextSnapshot,
           personal: dict[str, Any]) -> None:
    """Keep the signup whose ledger event is ``seq``, in the caller's transaction."""
    db.session.add(Signup(**row(subscription_id, seq, at, email, text, personal)))


def find(subscription_id: int, seq: int | None) -> Signup | None:
    """The signup a link or a mail names by ``seq``; without one, the subscription's first."""
    query = select(Signup).where(Signup.subscription_id == subscription_id)
    query = query.where(Signup.seq == seq) if seq is not None else query.order_by(Signup.seq)
    return db.session.scalars(query.limit(1)).first()


def of(subscription_id: int) -> list[Signup]:
    """Every signup record of the subscription, in ledger order."""
    return list(db.session.scalars(
        select(Signup).where(Signup.subscription_id == subscription_id).order_by(Signup.seq)))


def confirmed_values(sub: Subscription, signup: Signup | None) -> dict[str, Any]:
    """What a confirmation of ``signup`` puts on the subscription: that signup's values.

    Without a record (a subscription older than the records) the subscription's
    own values stand, as they did before. An address is only kept if the
    signup still has one.
    """
    source: Signup | Subscription = signup if signup is not None else sub
    values = {name: getattr(source, name) for name in CONFIRMED_VALUES}
    values["email"] = values["email"] or sub.email
    return values


def forget_personal(subscription_ids: list[int]) -> None:
    """Delete the names and fields every signup of these subscriptions entered
    (withdrawal, erasure), in the caller's transaction."""
    db.session.execute(
        update(Signup).where(Signup.subscription_id.in_(subscription_ids))
        .values(first_name=None, last_name=None, fields=null()),
        execution_options={"synchronize_session": False})


def minimize(in_batch: Any) -> None:
    """Blank every value of the signups of a minimized batch (``in_batch`` picks them by
    ``signup.subscription_id``); which locale and consent text they showed stays."""
    db.session.execute(
        update(_SIGNUPS).where(in_batch(_SIGNUPS.c.subscription_id))
        .values(email=null(), first_name=null(), last_name=null(), fields=null(),
                source_url=null()))

