"""The proof of consent: JSON, printable page, consent receipt, and `optin proof`."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from optin.extensions import db
from optin.models import AuditEntry, ConsentEvent, utcnow
from optin.privacy import wording

from ..conftest import ADMIN_TOKEN, deliver, links, retention_at, signup
from .test_document import english_left

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROOF = "/v1/contacts/proof?email=anna@example.org&list=newsletter"


@pytest.fixture
def anna(app, client, newsletter, mailbox):
    """Anna signs up from a landing page, confirms from another device, gets the welcome mail."""
    body = {"email": "anna@example.org", "list": "newsletter", "consent_text_version": 1,
            "first_name": "Anna", "fields": {"company": "Aalto GmbH"},
            "source_url": "https://www.example.com/landing"}
    assert client.post("/v1/subscriptions", json=body, headers={"User-Agent": "SignupBrowser/1"},
                       environ_base={"REMOTE_ADDR": "192.0.2.10"}).status_code == 202
    deliver(app)
    [mail] = mailbox.to("anna@example.org")
    assert client.post(links(mail)["confirm"], headers={"User-Agent": "ConfirmPhone/2"},
                       environ_base={"REMOTE_ADDR": "198.51.100.20"}).status_code == 303
    deliver(app)
    return mail


def test_proof_json_holds_what_a_court_needs(app, client, anna):
    response = client.get(PROOF, headers=AUTH)
    assert response.status_code == 200 and response.mimetype == "application/json"
    proof = response.json
    assert proof["address"] == "anna@example.org" and proof["ledger_ok"] is True
    assert proof["list"]["slug"] == "newsletter"
    [consent] = proof["consents"]

    text = consent["consent_text"]
    assert text["text"].startswith("Ja, ich möchte den Newsletter")
    assert text["sha256"] == hashlib.sha256(text["text"].encode()).hexdigest()
    assert text["sha256_verified"] is True and text["version"] == 1 and text["locale"] == "de"

    signup_ = consent["signup"]
    assert (signup_["ip"], signup_["user_agent"]) == ("192.0.2.10", "SignupBrowser/1")
    assert signup_["source_url"] == "https://www.example.com/landing"
    assert signup_["entered"] == {"email": "anna@example.org", "first_name": "Anna",
                                  "fields": {"company": "Aalto GmbH"}}
    assert datetime.fromisoformat(signup_["at"]) <= datetime.fromisoformat(
        consent["confirmation"]["at"])

    # The confirmation mail as sent: its Message-ID is the one the SMTP server received,
    # and the recorded body hash is the hash of the text the recipient got (with the
    # LF line endings it was rendered with; SMTP carries them as CRLF).
    confirm_mail = next(m for m in consent["mails"] if m["kind"] == "confirmation_sent")
    assert confirm_mail["message_id"] == anna["Message-ID"]
    assert confirm_mail["subject"] == anna["Subject"]
    assert confirm_mail["template"] == "confirm.de"
    received_text = anna.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    assert confirm_mail["text_sha256"] == hashlib.sha256(received_text.encode()).hexdigest()
    assert confirm_mail["matches_current_template"] is True
    assert "{{ confirm_url }}" in confirm_mail["template_source"]["text"]
    # The copy kept is what Anna got but for her link's token (tests/privacy/test_proof_mail.py).
    token = links(anna)["confirm"].rpartition("/")[2]
    assert confirm_mail["copy"]["parts"]["text"] == received_text.replace(token, "⟦token⟧")
    assert confirm_mail["copy"]["matches"] and confirm_mail["reconstructed_text"] is None

    confirmation = consent["confirmation"]
    assert (confirmation["ip"], confirmation["user_agent"]) == ("198.51.100.20", "ConfirmPhone/2")
    later = [e["kind"] for e in consent["later_events"]]
    assert "welcome_sent" in later and "sync_skipped" in later
    assert later[-1] == "proof_printed"
    assert consent["ledger"]["ok"] is True and consent["ledger"]["problems"] == []


def test_proof_page_is_printable_html(app, client, anna):
    response = client.get(PROOF, headers={**AUTH, "Accept": "text/html",
                                          "Accept-Language": "en-GB,en;q=0.8"})
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Content-Language"] == "en"
    page = response.get_data(as_text=True)
    for expected in ("Proof of consent", "anna@example.org", "Ja, ich möchte den Newsletter",
                     "192.0.2.10", "SignupBrowser/1", "198.51.100.20", "ConfirmPhone/2",
                     "https://www.example.com/landing", "Aalto GmbH", "confirm.de",
                     "Intact", "BGH", "I ZR 164/09", "Guten Tag Anna,", "⟦token⟧",
                     "matches the mail as sent"):
        assert expected in page, expected
    assert str(anna["Message-ID"]).replace("<", "&lt;").replace(">", "&gt;") in page
    # The style is inlined (a saved file prints as served); the CSP allows exactly it.
    assert "optin.css" not in page and "<link" not in page and "<style>" in page
    assert response.headers["Cache-Control"] == "no-store"
    same = client.get(PROOF + "&format=html", headers=AUTH)
    assert same.mimetype == "text/html"


def test_consent_receipt_in_kantara_shape(app, client, anna):
    receipt = client.get(PROOF + "&format=receipt", headers=AUTH).json
    assert receipt == client.get(PROOF.replace("/proof", "/receipt"), headers=AUTH).json | {
        "doubleOptIn": receipt["doubleOptIn"]}
    for key in ("version", "jurisdiction", "consentTimestamp", "collectionMethod",
                "consentReceiptID", "piiPrincipalId", "piiControllers", "policyUrl",
                "services", "sensitive", "spiCat"):
        assert key in receipt, key
    assert receipt["version"] == "KI-CR-v1.1.0"
    assert receipt["piiPrincipalId"] == "anna@example.org"
    confirmed_at = datetime.fromisoformat(receipt["doubleOptIn"]["confirmation"]["at"])
    assert receipt["consentTimestamp"] == int(confirmed_at.timestamp())
    [purpose] = receipt["services"][0]["purposes"]
    assert purpose["consentType"] == "EXPLICIT" and purpose["primaryPurpose"] is True
    assert purpose["thirdPartyDisclosure"] is False
    assert "company (as entered)" in purpose["piiCategory"]
    evidence = receipt["doubleOptIn"]
    assert evidence["signup"]["ip"] == "192.0.2.10"
    assert evidence["confirmation"]["ip"] == "198.51.100.20"
    assert evidence["confirmationMails"][0]["message_id"] == anna["Message-ID"]
    assert evidence["ledger"]["verified"] is True
    # Stable across calls, so other systems can deduplicate.
    again = client.get(PROOF + "&format=receipt", headers=AUTH).json
    assert again["consentReceiptID"] == receipt["consentReceiptID"]


def test_receipt_names_the_controller_policy_and_purpose_set_by_the_operator(client, runner, anna):
    result = runner.invoke(args=["lists", "update", "newsletter", "--controller",
                                 "Example GmbH, Berlin", "--purpose", "Monthly product news",
                                 "--privacy-policy-url", "https://www.example.com/privacy"])
    assert result.exit_code == 0, result.output
    receipt = client.get(PROOF + "&format=receipt", headers=AUTH).json
    assert receipt["policyUrl"] == "https://www.example.com/privacy"
    assert receipt["piiControllers"][0]["piiController"] == "Example GmbH, Berlin"
    assert receipt["services"][0]["purposes"][0]["purpose"] == "Monthly product news"


def test_proof_cli_in_every_format(app, runner, anna):
    text = runner.invoke(args=["proof", "anna@example.org", "--list", "newsletter", "--locale", "en"])
    assert text.exit_code == 0, text.output
    assert "Ledger: verified, intact" in text.output
    assert "IP 198.51.100.20" in text.output and "confirm.de" in text.output
    as_json = json.loads(runner.invoke(args=["proof", "anna@example.org", "--list", "newsletter",
                                             "--format", "json"]).output)
    assert as_json["consents"][0]["confirmation"]["ip"] == "198.51.100.20"
    html = runner.invoke(args=["proof", "anna@example.org", "--list", "newsletter",
                               "--format", "html"]).output
    assert html.startswith("<!doctype html>") and "<style>" in html  # prints without the service
    assert "@page" in html and "Nachweis der Einwilligung" in html  # the list's language: de
    receipt = json.loads(runner.invoke(args=["proof", "anna@example.org", "--list", "newsletter",
                                             "--format", "receipt"]).output)
    assert receipt["version"] == "KI-CR-v1.1.0"
    with app.app_context():
        actors = {a.actor for a in db.session.scalars(select(AuditEntry))}
        assert len(actors) == 1 and next(iter(actors)).startswith("cli:")
    missing = runner.invoke(args=["proof", "anna@example.org", "--list", "nope"])
    assert missing.exit_code == 1 and "no list 'nope'" in missing.output


def test_the_text_proof_follows_the_locale(runner, anna):
    """``optin proof EMAIL --list SLUG``: German for a German list (like the document), English
    with --locale en; no English word of the text proof in the German one."""
    german = runner.invoke(args=["proof", "anna@example.org", "--list", "newsletter"])
    assert german.exit_code == 0, german.output
    for expected in ("Nachweis der Einwilligung (Double-Opt-In)", "Protokoll: geprüft, unverändert",
                     "Einwilligung 1 (Abonnement 1, Status bestätigt)", "Anmeldung #1",
                     "Bestätigungsmail", "Aufbewahrt, solange das Abonnement besteht",
                     "Bestätigungsmail versandt", "Verantwortlicher:", "IP 198.51.100.20"):
        assert expected in german.output, expected
    assert english_left(german.output, wording.TEXT, wording.EVENTS) == []
    english = runner.invoke(args=["proof", "anna@example.org", "--list", "newsletter",
                                  "--locale", "en"])
    assert "Consent cycle 1 (subscription 1, status confirmed)" in english.output
    assert "confirmation mail sent" in english.output and "Nachweis" not in english.output


def test_tampering_shows_on_the_proof(app, client, runner, anna):
    with app.app_context():
        event = db.session.scalar(select(ConsentEvent).where(ConsentEvent.kind == "confirmed"))
        event.ip = "10.0.0.1"
        db.session.commit()
    proof = client.get(PROOF, headers=AUTH).json
    assert proof["ledger_ok"] is False
    assert "event #3 (confirmed) was modified" in proof["consents"][0]["ledger"]["problems"][0]
    assert "FEHLGESCHLAGEN" in client.get(PROOF, headers={**AUTH, "Accept": "text/html"}).get_data(True)
    result = runner.invoke(args=["proof", "anna@example.org", "--list", "newsletter", "--locale", "en"])
    assert result.exit_code == 1 and "VERIFICATION FAILED" in result.output
    result = runner.invoke(args=["proof", "anna@example.org", "--list", "newsletter"])
    assert result.exit_code == 1 and "PRÜFUNG FEHLGESCHLAGEN" in result.output


def test_every_consent_cycle_is_listed_newest_first(app, client, anna, mailbox):
    welcome = mailbox.to("anna@example.org")[-1]
    assert client.post(links(welcome)["unsubscribe"]).status_code == 303
    mailbox.clear()
    assert signup(client, "anna@example.org").status_code == 202
    deliver(app)
    assert client.post(links(mailbox.to("anna@example.org")[-1])["confirm"]).status_code == 303
    proof = client.get(PROOF, headers=AUTH).json
    assert [c["status"] for c in proof["consents"]] == ["confirmed", "unsubscribed"]
    assert proof["consents"][1]["withdrawal"]["channel"] == "link"
    receipt = client.get(PROOF + "&format=receipt", headers=AUTH).json
    assert receipt["doubleOptIn"]["status"] == "confirmed"


def test_proof_of_a_minimized_record(app, client, runner, anna, mailbox):
    welcome = mailbox.to("anna@example.org")[-1]
    assert client.post(links(welcome)["unsubscribe"]).status_code == 303
    later = (utcnow() + timedelta(days=366 * 5)).isoformat()
    assert retention_at(app, runner, later).exit_code == 0
    proof = client.get(PROOF, headers=AUTH).json
    [consent] = proof["consents"]
    assert consent["status"] == "minimized" and consent["address"] is None
    assert consent["signup"]["ip"] is None and consent["signup"]["redacted_at"]
    assert consent["confirmation"]["at"] and consent["confirmation"]["ip"] is None
    assert proof["ledger_ok"] is True
    kinds = [e["kind"] for e in consent["events"]]
    assert "minimized" in kinds and kinds[-1] == "proof_printed"


def test_proof_not_found(client, app, newsletter, signed_up):
    assert client.get("/v1/contacts/proof?email=x@example.org&list=nope",
                      headers=AUTH).status_code == 404
    assert client.get("/v1/contacts/proof?email=x@example.org&list=newsletter",
                      headers=AUTH).status_code == 404
    signed_up("bea@example.org")
    never = "/v1/contacts/proof?email=bea@example.org&list=newsletter"
    assert client.get(never, headers=AUTH).status_code == 200
    refused = client.get(never + "&format=receipt", headers=AUTH)
    assert refused.status_code == 404 and "never confirmed" in refused.json["detail"]
    assert client.get(never + "&format=docx", headers=AUTH).status_code == 422
    assert client.get(never + "&locale=fr", headers=AUTH).status_code == 422


def test_a_template_edited_while_the_service_runs_shows_on_the_next_proof(app, client, anna,
                                                                         tmp_path):
    """Proofs keep each template's version while its files are unchanged (an audit export
    builds thousands): an edit is seen by the very next proof."""
    from optin.config import TEMPLATE_DIR
    from optin.delivery.mailer import MailTemplates

    override = tmp_path / "override" / "email"
    override.mkdir(parents=True)
    copy = override / "confirm.de.txt"
    copy.write_text((TEMPLATE_DIR / "email" / "confirm.de.txt").read_text())  # the same, for now
    app.extensions["optin.mail_templates"] = MailTemplates(override_dir=tmp_path / "override")
    assert client.get(PROOF, headers=AUTH).json["consents"][0]["mails"][0][
        "matches_current_template"] is True
    copy.write_text(copy.read_text() + "Neue Zeile\n")
    later = copy.stat().st_mtime + 5
    os.utime(copy, (later, later))
    assert client.get(PROOF, headers=AUTH).json["consents"][0]["mails"][0][
        "matches_current_template"] is False


def test_proof_after_the_template_changed(app, client, anna, tmp_path):
    from optin.delivery.mailer import MailTemplates

    override = tmp_path / "override" / "email"
    override.mkdir(parents=True)
    (override / "confirm.de.txt").write_text("Neue Fassung {{ confirm_url }}\n")
    app.extensions["optin.mail_templates"] = MailTemplates(override_dir=tmp_path / "override")
    proof = client.get(PROOF, headers=AUTH).json
    confirm_mail = proof["consents"][0]["mails"][0]
    assert confirm_mail["matches_current_template"] is False
    assert confirm_mail["template_source"] is None and confirm_mail["reconstructed_text"] is None
    assert confirm_mail["template_sha256"]  # still identifies the version that was sent
    page = client.get(PROOF + "&locale=en", headers={**AUTH, "Accept": "text/html"}).get_data(
        as_text=True)
    assert "template changed since" in page and "Neue Fassung" not in page
