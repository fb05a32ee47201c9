"""Mail rendering and delivery: headers, multipart, UTF-8, injection, backends."""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
import os
import random
import string
from email.generator import BytesGenerator
from email.header import Header

import pytest
from jinja2 import TemplateError

from optin.config import TEMPLATE_DIR
from optin.delivery.mailer import (
    FAST_COMPAT32,
    UTF8,
    FileBackend,
    MailTemplates,
    RelayUnavailable,
    RenderedMail,
    SMTPBackend,
    backend_from_url,
    build_message,
)

from ..conftest import build_app, deliver, links, signup


def test_confirmation_mail_is_multipart_utf8_and_ad_free(app, client, newsletter, mailbox):
    signup(client, "s@example.org", first_name="Jürgen", locale="de")
    deliver(app)
    [mail] = mailbox.to("s@example.org")
    assert mail.get_content_type() == "multipart/alternative"
    assert mail.get_body(("plain",)) is not None and mail.get_body(("html",)) is not None
    assert "Jürgen" in str(mail["To"])
    assert str(mail["From"]) == "Newsletter <news@example.com>"  # the brand names the sender
    assert mail["Message-ID"].endswith("@example.com>")
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "List-Unsubscribe" not in mail  # nothing to leave before consent
    text = mail.get_body(("plain",)).get_content()
    assert "72" in text  # says how long the link is valid
    confirm = links(mail)["confirm"]
    assert confirm in mail.get_body(("html",)).get_content()


@pytest.mark.parametrize("name", [
    "Eve\r\nBcc: victim@example.net",
    "Eve\nSubject: you won",
    "Eve\x00\x1b[31m",
])
def test_names_with_line_breaks_or_controls_are_refused(app, client, newsletter, mailbox, name):
    response = signup(client, "t@example.org", first_name=name)
    assert response.status_code == 422
    assert "first_name" in response.json["errors"]
    deliver(app)
    assert mailbox.messages == []


def test_header_values_can_never_carry_a_second_header():
    """Defence in depth below the schema: the mail builder strips control characters."""
    from optin.delivery.mailer import RenderedMail

    mail = RenderedMail("Hi", "text", "<p>html</p>", "x.en", "0" * 64)
    msg = build_message(mail, to_email="t@example.org", to_name="Eve\r\nBcc: victim@example.net",
                        sender="a@example.com")
    wire = email.message_from_bytes(bytes(msg), policy=email.policy.default)
    assert "Bcc" not in wire and "\nBcc" not in bytes(msg).decode()
    [to] = wire["To"].addresses
    assert to.addr_spec == "t@example.org" and "\n" not in to.display_name


def test_html_part_escapes_user_input(app, client, newsletter, mailbox):
    signup(client, "u@example.org", first_name="<script>alert(1)</script>")
    deliver(app)
    html = mailbox.to("u@example.org")[0].get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_english_signup_gets_english_mail(app, client, newsletter, mailbox):
    signup(client, "v@example.org", locale="en")
    deliver(app)
    [mail] = mailbox.to("v@example.org")
    assert "confirm" in mail["Subject"].lower()


def test_templates_fall_back_to_english_and_carry_a_version():
    templates = MailTemplates()
    rendered = templates.render("goodbye", "fr", {"list_name": "X", "first_name": None,
                                                  "brand": {"name": "B"}, "locale": "fr",
                                                  "consent_text": None})
    assert rendered.template == "goodbye.en"
    assert len(rendered.template_sha256) == 64
    assert '<html lang="en">' in rendered.html  # the language of the template found, not "fr"


MAIL = {"list_name": "News", "first_name": "Anna", "consent_text": None, "brand": {"name": "B"},
        "locale": "de", "confirm_url": "https://n.test/confirm/t", "ttl_hours": 72}


def test_the_template_version_covers_the_bases_a_mail_extends(tmp_path):
    """Editing email/base.html or base.txt gives every mail a new version: the proof's
    "the current files hash the same" must not hold for a mail whose frame changed."""
    override = tmp_path / "email"
    override.mkdir()
    built_in = MailTemplates(override_dir=tmp_path)
    plain = built_in.render("confirm", "de", MAIL)
    assert list(built_in.version("confirm.de").sources) == [
        "confirm.de.subject.txt", "confirm.de.txt", "confirm.de.html", "base.txt", "base.html"]

    base_html = (TEMPLATE_DIR / "email" / "base.html").read_text()
    (override / "base.html").write_text(base_html.replace("</body>", "<p>Impressum</p>\n</body>"))
    (override / "base.txt").write_text("{% block body %}{% endblock %}-- \nImpressum\n")
    templates = MailTemplates(override_dir=tmp_path)
    framed = templates.render("confirm", "de", MAIL)
    assert "<p>Impressum</p>" in framed.html and "<p>Impressum</p>" not in plain.html
    assert framed.text.endswith("keinen Newsletter von uns.\n-- \nImpressum\n")
    assert framed.template == plain.template == "confirm.de"
    assert framed.template_sha256 != plain.template_sha256

    # The running worker's cache sees an edit of a base, as it sees an edit of the mail.
    (override / "base.html").write_text(base_html.replace("</body>", "<p>Imprint</p>\n</body>"))
    later = os.stat(override / "base.html").st_mtime + 10
    os.utime(override / "base.html", (later, later))
    edited = templates.render("confirm", "de", MAIL)
    assert "<p>Imprint</p>" in edited.html
    assert edited.template_sha256 not in (plain.template_sha256, framed.template_sha256)
    assert edited.template_sha256 == MailTemplates(override_dir=tmp_path).version("confirm.de").sha256


def test_a_mail_that_extends_nothing_keeps_its_version(tmp_path):
    """An operator's self-contained mail hashes as before bases existed (its three
    sources), so proofs of mails sent earlier still match the files."""
    override = tmp_path / "email"
    override.mkdir()
    sources = ["Bitte bestätigen: {{ list_name }}", "Link: {{ confirm_url }}\n",
               "<p>Link: {{ confirm_url }}</p>\n"]
    for part, source in zip(("subject.txt", "txt", "html"), sources, strict=True):
        (override / f"confirm.de.{part}").write_text(source)
    rendered = MailTemplates(override_dir=tmp_path).render("confirm", "de", MAIL)
    assert rendered.html == "<p>Link: https://n.test/confirm/t</p>\n"
    assert rendered.template_sha256 == hashlib.sha256("".join(sources).encode()).hexdigest()


def test_a_base_named_by_a_variable_is_refused(tmp_path):
    """The hash could not say which base shaped the mail, so the mail isn't sent."""
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "confirm.de.html").write_text("{% extends layout %}")
    with pytest.raises(TemplateError, match="by a variable"):
        MailTemplates(override_dir=tmp_path).render("confirm", "de", {**MAIL, "layout": "base.html"})


def test_file_backend_writes_one_eml_per_mail(tmp_path, app_config):
    app_config["OPTIN_MAIL_URL"] = (tmp_path / "outbox mail").as_uri()
    app = build_app(app_config)
    from optin.consent import lists

    with app.app_context():
        mailing_list = lists.create_list("newsletter", "News")
        lists.add_consent_text(mailing_list, "de", "Ja.")
    client = app.test_client()
    signup(client, "x@example.org")
    signup(client, "y@example.org")
    deliver(app)
    files = sorted((tmp_path / "outbox mail").glob("*.eml"))
    assert len(files) == 2
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["To"] and links(parsed)["confirm"]


def test_backend_urls():
    smtp = backend_from_url("smtp://user%40x:p%3Ass@mail.example:587?starttls=1")
    assert isinstance(smtp, SMTPBackend)
    assert (smtp.host, smtp.port, smtp.starttls, smtp.username) == (
        "mail.example", 587, True, "user@x")
    assert "p:ss" not in repr(smtp)
    smtps = backend_from_url("smtps://mail.example")
    assert isinstance(smtps, SMTPBackend) and smtps.implicit_tls and smtps.port == 465
    assert isinstance(backend_from_url("file:///tmp/mails"), FileBackend)


def test_build_message_strips_control_characters_from_extra_headers():
    from optin.delivery.mailer import RenderedMail

    mail = RenderedMail("Hi", "text", "<p>html</p>", "x.en", "0" * 64)
    msg = build_message(mail, to_email="z@example.org", to_name=None, sender="a@example.com",
                        headers={"List-Unsubscribe": "<https://x/u>\r\nBcc: evil@example.net"})
    wire = email.message_from_bytes(bytes(msg), policy=email.policy.default)
    assert "Bcc" not in wire and wire["List-Unsubscribe"].startswith("<https://x/u>")


def test_smtp_with_starttls_and_login(tmp_path):
    """A real STARTTLS handshake with certificate verification and AUTH LOGIN."""
    import ssl

    import trustme
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from optin.delivery.mailer import RenderedMail

    from ..conftest import Mailbox, free_port

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_context)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret:/pw"
        return AuthResult(success=ok)

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port,
                            tls_context=server_context, require_starttls=True,
                            authenticator=authenticate, auth_required=True)
    controller.start()
    try:
        backend = backend_from_url(
            f"smtp://news%40example.com:s3cret%3A%2Fpw@127.0.0.1:{port}?starttls=1&cafile={ca_path}")
        mail = RenderedMail("Grüße", "Hallo", "<p>Hallo</p>", "x.de", "0" * 64)
        backend.send(build_message(mail, to_email="tls@example.org", to_name="Zoë",
                                   sender="news@example.com"))
        backend.close()
        [received] = mailbox.messages
        assert received["Subject"] == "Grüße" and "Zoë" in str(received["To"])

        untrusted = backend_from_url(f"smtp://u:p@127.0.0.1:{port}?starttls=1")
        # An untrusted certificate fails every mail: the relay is unavailable (its breaker
        # counts it), and the cause says why.
        with pytest.raises(RelayUnavailable) as refused:
            untrusted.send(build_message(mail, to_email="tls@example.org", to_name=None,
                                         sender="news@example.com"))
        assert isinstance(refused.value.__cause__, ssl.SSLError)
    finally:
        controller.stop()


def _folded(policy, name: str, value: str) -> bytes | str:  # noqa: ANN001
    try:
        return policy.fold_binary(name, value)
    except Exception as exc:  # noqa: BLE001 - an embedded header is refused by both alike
        return type(exc).__name__


def test_the_fast_header_policy_writes_the_same_bytes_as_compat32():
    """FastCompat32 skips compat32's Header detour for ASCII values that fit on their line:
    the bytes on the wire must be the same, for random values and for whole mails."""
    fast = FAST_COMPAT32.clone(linesep="\r\n")
    slow = email.policy.compat32.clone(linesep="\r\n")
    rnd = random.Random(14)
    alphabet = string.printable[:95] + "  ;,\t\n"
    for _ in range(20_000):
        value = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 90)))
        name = rnd.choice(["To", "Subject", "Message-ID", "List-Unsubscribe-Post"])
        assert _folded(fast, name, value) == _folded(slow, name, value), (name, value)

    def flat(message, policy) -> bytes:  # noqa: ANN001 - as smtplib flattens a message
        out = io.BytesIO()
        BytesGenerator(out, policy=policy).flatten(message, linesep="\r\n")
        return out.getvalue()

    for i in range(50):
        mail = RenderedMail(subject=rnd.choice(["Bitte bestätigen Sie Ihre Anmeldung",
                                                "Please confirm your subscription " * 3]),
                            text="Hallo Ida,\n" + "x " * 200, html="<p>Hallo</p>",
                            template="confirm.de", template_sha256="0")
        message = build_message(
            mail, to_email=f"user{i}@example.org",
            to_name=rnd.choice([None, "Ida Müller", "Ida Mueller", "A" * 80]),
            sender="Bench GmbH <news@example.com>",
            reply_to=rnd.choice([None, "reply@example.com"]),
            headers=rnd.choice([{}, {"List-Unsubscribe": f"<http://x.test/u/{'a' * i * 4}>"}]))
        sent = flat(message, fast)
        assert sent == flat(message, slow)
        # A non-ASCII subject is encoded once per value, as Header writes it each time.
        if not mail.subject.isascii():
            message.replace_header("Subject", Header(mail.subject, UTF8))
            assert flat(message, slow) == sent
