"""The proof shows the confirmation mail as it left, and it hashes as recorded when it left:
before and after the withdrawal, after retention, and after a new signup."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select, text

from optin.extensions import db
from optin.models import MailCopy, utcnow

from ..conftest import ADMIN_TOKEN, deliver, links, retention_at, signup

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROOF = "/v1/contacts/proof?email=anna@example.org&list=newsletter"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _parts(message) -> dict[str, str]:
    plain = message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    html = message.get_body(preferencelist=("html",)).get_content().replace("\r\n", "\n")
    return {"subject": str(message["Subject"]), "text": plain, "html": html}


def _copy(client, cycle: int = 0) -> dict:
    proof = client.get(PROOF, headers=AUTH).json
    [mail] = [m for m in proof["consents"][cycle]["mails"] if m["kind"] == "confirmation_sent"]
    return mail


def _check_against_the_mail_received(mail: dict, received, with_names: bool) -> None:
    """The copy hashes as the ledger recorded; with the link's token put back (and, once
    withdrawn, the name) it is, byte for byte, the mail the recipient got."""
    copy = mail["copy"]
    assert copy["matches"] is True and copy["with_names"] is with_names
    for part, shown in copy["parts"].items():
        assert copy["sha256"][part] == sha(shown) == copy["recorded_sha256"][part]
    token = links(received)["confirm"].rpartition("/")[2]
    assert copy["token_sha256"] == [sha(token)]
    sent = _parts(received)
    for part, shown in copy["parts"].items():
        restored = shown.replace(copy["markers"]["token"], token)
        if not with_names:
            restored = restored.replace(copy["markers"]["first_name"], "Anna")
        assert restored == sent[part], part
    assert sha(sent["text"]) == mail["text_sha256"] and sha(sent["html"]) == mail["html_sha256"]


def test_the_mail_copy_hashes_as_recorded_through_withdrawal_retention_and_resignup(
        app, client, runner, newsletter, mailbox):
    assert signup(client, "anna@example.org", first_name="Anna").status_code == 202
    deliver(app)
    [received] = mailbox.to("anna@example.org")
    assert client.post(links(received)["confirm"]).status_code == 303
    deliver(app)

    mail = _copy(client)
    _check_against_the_mail_received(mail, received, with_names=True)
    assert "Guten Tag Anna," in mail["copy"]["parts"]["text"] and mail["copy"]["names_removed"] == []
    assert mail["copy"]["markers"]["token"] in mail["copy"]["parts"]["html"]

    # Withdrawn: the name is gone from the copy, which still hashes as recorded at sending.
    welcome = mailbox.to("anna@example.org")[-1]
    assert client.post(links(welcome)["unsubscribe"]).status_code == 303
    mail = _copy(client)
    _check_against_the_mail_received(mail, received, with_names=False)
    assert mail["copy"]["names_removed"] == ["first_name"]
    assert "Anna" not in "".join(mail["copy"]["parts"].values())
    assert mail["reconstructed_text"] is None  # no "Hallo," rendered again from today's values
    with app.app_context():
        assert db.session.scalar(select(MailCopy.names)) is None
        stored = " ".join(db.session.scalars(text("SELECT body FROM mail_body")))
        assert "Anna" not in stored and token_of(received) not in stored

    # A new signup after the withdrawal: a new cycle with its own copy; the old one stands.
    mailbox.clear()
    assert signup(client, "anna@example.org", first_name="Annabel").status_code == 202
    deliver(app)
    [again] = mailbox.to("anna@example.org")
    newer = _copy(client, 0)
    assert "Guten Tag Annabel," in newer["copy"]["parts"]["text"] and newer["copy"]["matches"]
    _check_against_the_mail_received(_copy(client, 1), received, with_names=False)

    # Minimized by retention: the copy without the name still hashes as recorded.
    later = (utcnow() + timedelta(days=366 * 5)).isoformat()
    assert retention_at(app, runner, later).exit_code == 0
    proof = client.get(PROOF, headers=AUTH).json
    assert [c["status"] for c in proof["consents"]] == ["minimized", "minimized"]
    _check_against_the_mail_received(_copy(client, 1), received, with_names=False)
    newest = _copy(client, 0)["copy"]
    assert newest["matches"] and not newest["with_names"] and "Annabel" not in newest["parts"]["text"]
    assert proof["ledger_ok"] is True
    assert again["Message-ID"] == _copy(client, 0)["message_id"]


def token_of(message) -> str:
    return links(message)["confirm"].rpartition("/")[2]


def test_a_copy_edited_in_the_database_no_longer_matches(app, client, newsletter, mailbox):
    assert signup(client, "anna@example.org", first_name="Anna").status_code == 202
    deliver(app)
    with app.app_context():
        db.session.execute(text("UPDATE mail_body SET body = replace(body, 'Newsletter', 'Werbung')"))
        db.session.commit()
    copy = _copy(client)["copy"]
    assert copy["matches"] is False


def test_each_signup_of_a_pending_address_has_its_own_mail_copy(app, client, newsletter, mailbox):
    assert signup(client, "anna@example.org", first_name="Anna").status_code == 202
    deliver(app)
    with app.app_context():  # past the resend interval
        db.session.execute(text("UPDATE subscription SET last_mail_requested_at = :t"),
                           {"t": (utcnow() - timedelta(hours=1)).replace(tzinfo=None)
                            if db.engine.dialect.name == "sqlite" else utcnow() - timedelta(hours=1)})
        db.session.commit()
    assert signup(client, "anna@example.org", first_name="Mallory").status_code == 202
    deliver(app)
    first, second = mailbox.to("anna@example.org")
    proof = client.get(PROOF, headers=AUTH).json
    mails = {m["message_id"]: m for m in proof["consents"][0]["mails"]}
    _check_against_the_mail_received(mails[first["Message-ID"]], first, with_names=True)
    assert "Guten Tag Mallory," in mails[second["Message-ID"]]["copy"]["parts"]["text"]
