"""Each signup keeps its own evidence; a link confirms the signup it was mailed for.

The attack of issue 13, finding 4: Anna signs up (German, consent text v1). Someone else
posts her address again from another IP (English, text v2, another name, company and
source). Whatever link is clicked, it confirms exactly the signup it was mailed for, and
the proof ties every value to the event that entered it.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import select

from optin.consent import lists
from optin.consent.tokens import CONFIRM, make_token
from optin.extensions import db
from optin.models import MailingList, Subscription, utcnow

from ..conftest import ADMIN_TOKEN, SECRET, deliver, links, retention_at

ANNA = "anna@example.org"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROOF = f"/v1/contacts/proof?email={ANNA}&list=newsletter"
VICTIM = {"REMOTE_ADDR": "192.0.2.10"}
ATTACKER = {"REMOTE_ADDR": "203.0.113.66"}
TEXT_V2_EN = "Version two: yes, send me the newsletter, and share my data with partners."


def _visible(html: str) -> str:
    """A page's text as read: tags out (a compound such as "E-Mail" sits in a no-wrap span)."""
    return re.sub(r"<[^>]+>", "", html)


@pytest.fixture
def app_config(app_config):
    """The personal field ``company`` goes to ActiveCampaign field 3."""
    app_config["OPTIN_AC_FIELD_MAP"] = "company:3"
    return app_config


@pytest.fixture
def texts(ac_app, ac_newsletter):
    """The newsletter with an English consent text version 2 besides the v1 texts."""
    with ac_app.app_context():
        lists.add_consent_text(db.session.get(MailingList, ac_newsletter["id"]), "en", TEXT_V2_EN)
    return ac_newsletter


def _victim_signs_up(client) -> None:
    response = client.post("/v1/subscriptions", json={
        "email": ANNA, "list": "newsletter", "consent_text_version": 1, "locale": "de",
        "first_name": "Anna", "fields": {"company": "Aalto GmbH"},
        "source_url": "https://www.example.com/anmelden"},
        headers={"User-Agent": "VictimBrowser/1"}, environ_base=VICTIM)
    assert response.status_code == 202


def _attacker_signs_up(client) -> None:
    response = client.post("/v1/subscriptions", json={
        "email": ANNA, "list": "newsletter", "consent_text_version": 2, "locale": "en",
        "first_name": "Mallory", "last_name": "Mallet", "fields": {"company": "Evil Corp"},
        "source_url": "https://evil.example/form"},
        headers={"User-Agent": "AttackerBot/6"}, environ_base=ATTACKER)
    assert response.status_code == 202


def _text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def _proof(client) -> dict:
    response = client.get(PROOF, headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    [cycle] = response.json["consents"]
    return cycle


def _verify(runner) -> None:
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output


def test_a_later_signup_cannot_rewrite_what_the_mailed_link_confirms(
        ac_app, client, runner, texts, mailbox, fake_ac):
    _victim_signs_up(client)
    deliver(ac_app)
    [german] = mailbox.to(ANNA)
    assert "Guten Tag Anna," in _text(german)

    _attacker_signs_up(client)  # within the resend interval: no mail of its own
    deliver(ac_app)
    assert len(mailbox.to(ANNA)) == 1

    path = links(german)["confirm"]
    page = client.get(path).get_data(as_text=True)
    assert '<html lang="de"' in page
    assert lists.DEMO_TEXTS["de"] in _visible(page) and TEXT_V2_EN not in _visible(page)
    done = client.post(path, headers={"User-Agent": "VictimPhone/2"},
                       environ_base={"REMOTE_ADDR": "198.51.100.20"})
    assert done.status_code == 303
    assert '<html lang="de"' in client.get(done.headers["Location"]).get_data(as_text=True)
    deliver(ac_app)

    welcome = mailbox.to(ANNA)[-1]
    assert "Guten Tag Anna," in _text(welcome) and "Mallory" not in _text(welcome)
    assert "Mallory" not in str(welcome["To"])
    contact = fake_ac.contact(ANNA)
    assert contact is not None
    assert (contact["firstName"], contact.get("lastName") or "") == ("Anna", "")
    assert contact["fieldValues"] == {"3": "Aalto GmbH"}
    assert fake_ac.contact_status(ANNA, 1) == 1

    cycle = _proof(client)
    assert (cycle["consent_text"]["locale"], cycle["consent_text"]["version"]) == ("de", 1)
    first, again = cycle["signups"]
    assert (first["kind"], again["kind"]) == ("signup_requested", "signup_repeated")
    assert cycle["signup"] == first and cycle["repeated_signups"] == [again]
    # Each signup shows the values it entered, next to its own time, IP and source.
    assert (first["ip"], first["user_agent"]) == ("192.0.2.10", "VictimBrowser/1")
    assert first["source_url"] == "https://www.example.com/anmelden"
    assert first["entered"] == {"email": ANNA, "first_name": "Anna",
                                "fields": {"company": "Aalto GmbH"}}
    assert (first["locale"], first["consent_text"]["version"]) == ("de", 1)
    assert (again["ip"], again["user_agent"]) == ("203.0.113.66", "AttackerBot/6")
    assert again["source_url"] == "https://evil.example/form"
    assert again["entered"] == {"email": ANNA, "first_name": "Mallory", "last_name": "Mallet",
                                "fields": {"company": "Evil Corp"}}
    assert (again["locale"], again["consent_text"]["version"]) == ("en", 2)
    assert again["consent_text"]["text"] == TEXT_V2_EN
    assert again["action"] == "mail throttled"
    assert first["entered_sha256"] != again["entered_sha256"]
    # The one mail was for the first signup, and the confirmation confirmed that one.
    [mail] = [m for m in cycle["mails"] if m["kind"] == "confirmation_sent"]
    assert mail["message_id"] == german["Message-ID"] and mail["signup_seq"] == first["seq"]
    assert (first["confirmed"], again["confirmed"]) == (True, False)
    assert first["mails"] == [german["Message-ID"]] and again["mails"] == []
    confirmation = cycle["confirmation"]
    assert confirmation["signup_seq"] == first["seq"]
    assert confirmation["ip"] == "198.51.100.20"
    assert confirmation["entered_sha256"] == first["entered_sha256"]
    page = client.get(PROOF + "&locale=en", headers={**AUTH, "Accept": "text/html"}).get_data(
        as_text=True)
    tables = dict(re.findall(r'<table class="facts signup" id="signup-\d+-(\d+)">(.*?)</table>',
                             page, re.S))
    victims, attackers = tables[str(first["seq"])], tables[str(again["seq"])]
    assert "the signup confirmed" in victims and "not the signup confirmed" in attackers
    assert all(v in victims for v in ("Anna", "192.0.2.10", "https://www.example.com/anmelden"))
    assert all(v in attackers for v in ("Mallory", "203.0.113.66", "Evil Corp", "evil.example"))
    assert "Mallory" not in victims and "Anna" not in attackers
    _verify(runner)


def test_a_later_signup_that_mails_gets_its_own_link(ac_app, client, runner, texts, mailbox,
                                                      fake_ac):
    _victim_signs_up(client)
    deliver(ac_app)
    [german] = mailbox.to(ANNA)
    with time_machine.travel(utcnow() + timedelta(minutes=20), tick=True):
        _attacker_signs_up(client)  # the resend interval has passed: a mail of its own
        deliver(ac_app)
        german_again, english = mailbox.to(ANNA)
        assert german_again is german
        assert english["Subject"] != german["Subject"]
        assert "Hello Mallory," in _text(english) and "Version two: yes" in _text(english)
        assert "Mallory" in str(english["To"])
        # Both links are live while the signup is pending; each shows its own signup.
        german_page = client.get(links(german)["confirm"]).get_data(as_text=True)
        assert '<html lang="de"' in german_page and TEXT_V2_EN not in german_page
        english_page = client.get(links(english)["confirm"]).get_data(as_text=True)
        assert '<html lang="en"' in english_page and TEXT_V2_EN in english_page

        assert client.post(links(english)["confirm"]).status_code == 303
        deliver(ac_app)
        welcome = mailbox.to(ANNA)[-1]
        assert "Hello Mallory," in _text(welcome)
        contact = fake_ac.contact(ANNA)
        assert (contact["firstName"], contact["lastName"]) == ("Mallory", "Mallet")
        assert contact["fieldValues"] == {"3": "Evil Corp"}
        # The first link now finds the subscription confirmed, and changes nothing.
        late = client.post(links(german)["confirm"])
        assert late.status_code == 303
        assert 'lang="en"' in client.get(late.headers["Location"]).get_data(as_text=True)

        cycle = _proof(client)
    first, again = cycle["signups"]
    assert (cycle["consent_text"]["locale"], cycle["consent_text"]["version"]) == ("en", 2)
    assert cycle["confirmation"]["signup_seq"] == again["seq"]
    assert (first["confirmed"], again["confirmed"]) == (False, True)
    assert first["mails"] == [german["Message-ID"]]
    assert again["mails"] == [english["Message-ID"]] and again["action"] == "mail queued"
    assert again["ip"] == "203.0.113.66" and first["ip"] == "192.0.2.10"
    _verify(runner)


def test_a_link_mailed_before_signups_were_recorded_confirms_the_first_signup(
        ac_app, client, runner, texts, mailbox, fake_ac):
    """Links made before the signup was named in them carry the subscription and nonce only."""
    _victim_signs_up(client)
    _attacker_signs_up(client)
    with ac_app.app_context():
        sub = db.session.scalar(select(Subscription))
        old_link = f"/confirm/{make_token(SECRET, CONFIRM, sub.id, sub.nonce)}"
    page = client.get(old_link).get_data(as_text=True)
    assert '<html lang="de"' in page and lists.DEMO_TEXTS["de"] in _visible(page)
    assert client.post(old_link).status_code == 303
    deliver(ac_app)
    assert "Guten Tag Anna," in _text(mailbox.to(ANNA)[-1])
    assert fake_ac.contact(ANNA)["fieldValues"] == {"3": "Aalto GmbH"}
    cycle = _proof(client)
    assert cycle["confirmation"]["signup_seq"] == cycle["signups"][0]["seq"]
    _verify(runner)


def test_a_link_naming_another_subscriptions_signup_is_refused(ac_app, client, texts, mailbox):
    _victim_signs_up(client)
    with ac_app.app_context():
        sub = db.session.scalar(select(Subscription))
        forged = f"/confirm/{make_token(SECRET, CONFIRM, sub.id, sub.nonce, signup_seq=9)}"
    assert client.get(forged).status_code == 404
    assert client.post(forged).status_code == 404
    with ac_app.app_context():
        assert db.session.scalar(select(Subscription.status)) == "pending"


def test_every_signups_values_are_deleted_at_withdrawal(ac_app, client, runner, texts, mailbox):
    _victim_signs_up(client)
    _attacker_signs_up(client)
    deliver(ac_app)
    [mail] = mailbox.to(ANNA)
    assert client.post(links(mail)["confirm"]).status_code == 303
    deliver(ac_app)
    export = client.get(f"/v1/contacts?email={ANNA}", headers=AUTH).get_data(as_text=True)
    assert "Mallory" in export and "Evil Corp" in export and "Aalto GmbH" in export

    unsubscribe = links(mailbox.to(ANNA)[-1])["unsubscribe"]
    assert client.post(unsubscribe).status_code == 303
    export = client.get(f"/v1/contacts?email={ANNA}", headers=AUTH).get_data(as_text=True)
    proof = client.get(PROOF, headers=AUTH).get_data(as_text=True)
    for value in ("Mallory", "Mallet", "Evil Corp", "Aalto GmbH"):
        assert value not in export, value
        assert value not in proof, value
    [record] = client.get(f"/v1/contacts?email={ANNA}", headers=AUTH).json["subscriptions"]
    assert [s["first_name"] for s in record["signups"]] == [None, None]
    # What proof needs stays: each signup's source, locale and text, and its digest.
    cycle = _proof(client)
    assert [s["source_url"] for s in cycle["signups"]] == [
        "https://www.example.com/anmelden", "https://evil.example/form"]
    assert all(s["entered_sha256"] for s in cycle["signups"])
    _verify(runner)


def test_erasure_and_minimization_delete_every_signups_values(ac_app, client, runner, texts):
    _victim_signs_up(client)
    _attacker_signs_up(client)
    export = client.get(f"/v1/contacts?email={ANNA}", headers=AUTH).get_data(as_text=True)
    assert "Mallory" in export and "Aalto GmbH" in export
    assert client.delete(f"/v1/contacts?email={ANNA}", headers=AUTH).status_code == 200
    export = client.get(f"/v1/contacts?email={ANNA}", headers=AUTH).get_data(as_text=True)
    assert "Mallory" not in export and "Aalto GmbH" not in export
    assert "https://evil.example/form" in export  # proof until it lapses

    later = (utcnow() + timedelta(days=4000)).date().isoformat()
    assert retention_at(ac_app, runner, later).exit_code == 0
    [record] = client.get(f"/v1/contacts?email={ANNA}", headers=AUTH).json["subscriptions"]
    assert record["status"] == "minimized"
    assert [(s["email"], s["source_url"], s["fields"]) for s in record["signups"]] == [
        (None, None, None), (None, None, None)]
    _verify(runner)
