"""Which addresses a signup takes, how they are stored, hashed and mailed (issue 13: 2, 3, 13a, 12d).

Through HTTP and a real SMTP server: an IDN domain goes out in its ASCII form, a
local part that is not ASCII is refused by default and sent with SMTPUTF8 when
configured and the relay offers it, and distinct mailboxes stay distinct.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select, update

from optin.config import current_settings
from optin.extensions import db
from optin.models import MailingList, OutboxItem, Signup, Subscription, Suppression
from optin.ops.logs import pseudonym
from optin.ops.pseudonyms import keyed_hash

from ..conftest import ADMIN_TOKEN, SMTPServer, deliver, links, signup

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def plain_relay() -> Iterator[SMTPServer]:
    """An SMTP server that does not offer SMTPUTF8 (the session's default one does)."""
    server = SMTPServer(enable_SMTPUTF8=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def when_offered_config(app_config: dict[str, str]) -> None:
    app_config["OPTIN_SMTPUTF8"] = "when_offered"


@pytest.fixture
def plain_relay_config(app_config: dict[str, str], plain_relay: SMTPServer) -> Iterator[SMTPServer]:
    app_config["OPTIN_MAIL_URL"] = plain_relay.url
    plain_relay.mailbox.clear()
    yield plain_relay


def _rows(app: Any) -> list[tuple[str, str]]:
    with app.app_context():
        return [(s.email, s.email_hash) for s in db.session.scalars(
            select(Subscription).order_by(Subscription.id))]


def _outbox(app: Any) -> list[tuple[str, int, str | None]]:
    """The mails' outbox rows (the signup requests' intake rows left out)."""
    with app.app_context():
        return [(o.status, o.attempts, o.last_error) for o in db.session.scalars(
            select(OutboxItem).where(OutboxItem.kind != "signup_intake").order_by(OutboxItem.id))]


# --- finding 2: IDN domains are mailed in ASCII ----------------------------------------


@pytest.mark.parametrize("entered", ["anna@bücher.example", "anna@xn--bcher-kva.example",
                                     "Anna@BÜCHER.example"])
def test_an_idn_domain_is_stored_and_mailed_in_ascii(app, client, newsletter, mailbox, entered):
    assert signup(client, entered).status_code == 202
    [(stored, _)] = _rows(app)
    assert stored == entered.split("@")[0] + "@xn--bcher-kva.example"
    assert deliver(app) == 1
    assert _outbox(app) == [("done", 1, None)]
    [(_, recipients)] = mailbox.envelopes
    assert recipients == [stored]
    [mail] = mailbox.messages
    assert str(mail["To"]) == stored
    assert "confirm" in links(mail)
    # The proof keeps the address as it was entered next to the one mailed.
    confirm = links(mail)["confirm"]
    assert client.post(confirm).status_code == 303
    proof = client.get(f"/v1/contacts/proof?email={entered}&list=newsletter", headers=AUTH)
    assert proof.status_code == 200, proof.json
    [cycle] = proof.json["consents"]
    assert cycle["address"] == stored
    assert cycle["signup"]["entered"]["email"] == entered


def test_an_idn_address_stored_before_the_fix_is_mailed_in_ascii(app, client, newsletter,
                                                                  mailbox):
    assert signup(client, "anna@example.org").status_code == 202
    with app.app_context():  # as rows were stored until issue 13 (the signup record too)
        db.session.execute(update(Subscription).values(email="anna@bücher.example"))
        db.session.execute(update(Signup).values(email="anna@bücher.example"))
        db.session.commit()
    deliver(app)
    assert _outbox(app) == [("done", 1, None)]
    assert mailbox.envelopes[0][1] == ["anna@xn--bcher-kva.example"]


# --- finding 2: non-ASCII local parts ---------------------------------------------------


@pytest.mark.parametrize("entered", ["jörg@example.org", "ａｎｎａ@example.org"])
def test_a_non_ascii_local_part_is_refused_by_default(app, client, newsletter, entered):
    response = signup(client, entered)
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert "not supported" in response.json["errors"]["email"][0]
    assert _rows(app) == []


def test_with_smtputf8_a_non_ascii_local_part_is_mailed_when_the_relay_offers_it(
        app, client, newsletter, mailbox, when_offered_config):
    relay = mailbox
    response = signup(client, "jörg@bücher.example", first_name="Jörg")
    assert response.status_code == 202
    [(stored, _)] = _rows(app)
    assert stored == "jörg@xn--bcher-kva.example"
    deliver(app)
    assert _outbox(app) == [("done", 1, None)]
    [(_, recipients)] = relay.envelopes
    assert recipients == ["jörg@xn--bcher-kva.example"]
    [mail] = relay.messages
    assert mail["To"].addresses[0].addr_spec == "jörg@xn--bcher-kva.example"
    assert mail["To"].addresses[0].display_name == "Jörg"
    confirm = links(mail)["confirm"]
    assert client.post(confirm).status_code == 303
    deliver(app)  # the welcome mail, the same way
    assert len(relay.to("jörg@xn--bcher-kva.example")) == 2


def test_with_smtputf8_a_relay_without_it_makes_the_mail_a_dead_letter_at_once(
        app, client, newsletter, when_offered_config, plain_relay_config, caplog):
    mailbox = plain_relay_config.mailbox
    assert signup(client, "jörg@example.org").status_code == 202
    with caplog.at_level(logging.INFO):
        deliver(app)
    [(status, attempts, error)] = _outbox(app)
    assert (status, attempts) == ("dead", 1)
    assert "SMTPUTF8" in error and "jörg" not in error
    assert mailbox.messages == []
    assert not [r for r in caplog.records if r.exc_info]  # no traceback
    assert "jörg" not in caplog.text


def test_a_stored_non_ascii_address_under_refuse_is_a_dead_letter_at_once(
        app, client, newsletter, mailbox, caplog):
    assert signup(client, "joerg@example.org").status_code == 202
    with app.app_context():  # a row from before issue 13 (or an import)
        db.session.execute(update(Subscription).values(email="jörg@example.org"))
        db.session.execute(update(Signup).values(email="jörg@example.org"))
        db.session.commit()
    deliver(app)
    [(status, attempts, error)] = _outbox(app)
    assert (status, attempts) == ("dead", 1)
    assert "OPTIN_SMTPUTF8" in error
    assert mailbox.messages == []
    assert not [r for r in caplog.records if r.exc_info]


def test_a_mail_that_cannot_be_built_is_a_dead_letter_without_a_traceback(
        app, client, newsletter, mailbox, caplog):
    assert signup(client, "anna@example.org").status_code == 202
    with app.app_context():  # a sender no header can hold (the list's own sender setting)
        db.session.execute(update(MailingList).values(sender="nëws@exämple.com"))
        db.session.commit()
    deliver(app)
    [(status, attempts, error)] = _outbox(app)
    assert (status, attempts) == ("dead", 1)
    assert error.startswith("PermanentFailure: the mail cannot be built")
    assert not [r for r in caplog.records if r.exc_info]


# --- finding 3: distinct mailboxes stay distinct ----------------------------------------


def test_strasse_and_strasse_with_eszett_are_two_subscriptions(app, client, newsletter,
                                                                mailbox, when_offered_config):
    assert signup(client, "straße@example.org").status_code == 202
    assert signup(client, "strasse@example.org").status_code == 202
    rows = _rows(app)
    assert [email for email, _ in rows] == ["straße@example.org", "strasse@example.org"]
    assert rows[0][1] != rows[1][1]
    deliver(app)
    assert sorted(r for _, rcpt in mailbox.envelopes for r in rcpt) == [
        "strasse@example.org", "straße@example.org"]
    # Each answers for itself.
    for address in ("straße@example.org", "strasse@example.org"):
        found = client.get(f"/v1/contacts?email={address}", headers=AUTH)
        assert found.json["address"] == address
        assert [s["email"] for s in found.json["subscriptions"]] == [address]


def test_non_ascii_capitals_are_not_folded(app, client, newsletter, when_offered_config):
    assert signup(client, "JÖRG@example.org").status_code == 202
    assert signup(client, "jörg@example.org").status_code == 202
    assert len(_rows(app)) == 2


def test_ascii_case_and_domain_spelling_stay_one_subscription(app, client, newsletter):
    for entered in ("Anna@bücher.example", "anna@XN--BCHER-KVA.example", "ANNA@Bücher.Example"):
        assert signup(client, entered).status_code == 202
    [(stored, digest)] = _rows(app)
    with app.app_context():
        key = current_settings().hash_key
    # The hash an ASCII address always had (case-folded), so stored suppressions still hold;
    # an IDN domain's too (it was hashed in Unicode).
    assert digest == hmac.new(key, "anna@bücher.example".encode(), hashlib.sha256).hexdigest()
    assert keyed_hash("Carla@Example.ORG", key) == hmac.new(
        key, b"carla@example.org", hashlib.sha256).hexdigest()


def test_ip_pseudonyms_are_unchanged(app):
    key = b"k" * 32
    for ip in ("203.0.113.7", "2001:DB8::1", " 10.0.0.1 "):
        old = hmac.new(key, ip.strip().casefold().encode(), hashlib.sha256).hexdigest()
        assert keyed_hash(ip, key) == old
        assert pseudonym(ip, key) == old[:12]


def test_a_log_pseudonym_is_the_start_of_the_address_hash(app, client, newsletter):
    assert signup(client, "straße@Bücher.example", ).status_code == 422  # refused: not ASCII
    assert signup(client, "Anna@Bücher.example").status_code == 202
    [(stored, digest)] = _rows(app)
    with app.app_context():
        key = current_settings().hash_key
    assert pseudonym("anna@bücher.example", key) == pseudonym(stored, key) == digest[:12]


# --- finding 13a: RFC 5321's 64 characters before the @ ---------------------------------


def test_a_local_part_longer_than_64_characters_is_refused(app, client, newsletter):
    too_long = signup(client, "a" * 65 + "@example.org")
    assert too_long.status_code == 422
    assert "too long before the @-sign" in too_long.json["errors"]["email"][0]
    assert signup(client, "a" * 64 + "@example.org").status_code == 202
    assert [email for email, _ in _rows(app)] == ["a" * 64 + "@example.org"]


def test_a_longer_local_part_stored_before_the_rule_can_still_be_found(app, client, newsletter):
    legacy = "b" * 65 + "@example.org"
    assert signup(client, "b" * 64 + "@example.org").status_code == 202
    with app.app_context():  # a row accepted before issue 13
        db.session.execute(update(Subscription).values(
            email=legacy, email_hash=keyed_hash(legacy, current_settings().hash_key)))
        db.session.commit()
    found = client.get(f"/v1/contacts?email={legacy}", headers=AUTH)
    assert found.status_code == 200
    assert [s["email"] for s in found.json["subscriptions"]] == [legacy]


# --- finding 12d: the documented schema and the check agree ------------------------------


def test_the_schema_documents_an_address(app, client):
    spec = client.get("/openapi.json").json
    email = spec["components"]["schemas"]["Signup"]["properties"]["email"]
    assert email["format"] == "email"
    assert (email["minLength"], email["maxLength"]) == (3, 254)
    assert "64 characters" in email["description"]


@pytest.mark.parametrize("value", ["", "   ", "not an address", "anna@", "@example.org",
                                   "anna@localhost", "a@b"])
@pytest.mark.parametrize("as_form", [False, True])
def test_a_non_address_is_named_in_the_same_422_as_every_other_field(app, client, newsletter,
                                                                      value, as_form):
    body = {"email": value, "consent_text_version": 1}  # and no list
    response = (client.post("/v1/subscriptions", data=body, headers={"Accept": "application/json"})
                if as_form else client.post("/v1/subscriptions", json=body))
    assert response.status_code == 422
    assert set(response.json["errors"]) == {"email", "list"}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Subscription)) == 0


def test_the_migration_rehashes_stored_non_ascii_addresses(app, client, newsletter,
                                                           when_offered_config):
    assert signup(client, "straße@example.org").status_code == 202
    with app.app_context():
        key = current_settings().hash_key
        legacy = hmac.new(key, b"strasse@example.org", hashlib.sha256).hexdigest()
        db.session.execute(update(Subscription).values(email_hash=legacy))  # as stored before
        db.session.add(Suppression(list_id=newsletter["id"], email_hash=legacy, reason="import"))
        db.session.commit()
        downgrade(revision="0001")
        upgrade()
        db.session.expire_all()
        [(_, digest)] = _rows(app)
        assert digest == keyed_hash("straße@example.org", key) != legacy
        kept = set(db.session.scalars(select(Suppression.email_hash)))
    assert kept == {legacy, digest}
    # The ASCII spelling is a mailbox of its own now (still suppressed: the old record may be its).
    assert signup(client, "strasse@example.org").status_code == 202
    assert len(_rows(app)) == 2
