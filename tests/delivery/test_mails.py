"""What the confirmation, welcome and goodbye mails look like, in HTML and text."""

from __future__ import annotations

import re
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest

from optin.brand import AA_TEXT, contrast_ratio, readable_shade
from optin.config import TEMPLATE_DIR
from optin.delivery.mailer import MailTemplates

from ..conftest import ADMIN_TOKEN, deliver

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROOF = "/v1/contacts/proof?email=anna@example.org&list=newsletter"


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href") or "", ""

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.anchors.append((" ".join(self._text.split()), self._href))
            self._href = None


def _parts(mail: EmailMessage) -> tuple[str, str]:
    """Text and HTML part, with the CRLF of the SMTP transfer undone."""
    return tuple(mail.get_body((kind,)).get_content().replace("\r\n", "\n")  # type: ignore[return-value,union-attr]
                 for kind in ("plain", "html"))


def _anchors(html: str) -> list[tuple[str, str]]:
    parser = _Anchors()
    parser.feed(html)
    return parser.anchors


def _assert_text_is_wrapped(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 72 or re.fullmatch(r"\S+", line), line  # only a URL may be longer


CONFIRM = {"de": ("Anmeldung bestätigen", "Bitte bestätigen Sie Ihre Anmeldung zu „Example Newsletter“"),
           "en": ("Confirm subscription", "Please confirm your subscription to “Example Newsletter”")}
UNSUBSCRIBE = {"de": "Vom Newsletter abmelden", "en": "Unsubscribe"}
GOODBYE = {"de": "Sie sind von „Example Newsletter“ abgemeldet",
           "en": "You have unsubscribed from “Example Newsletter”"}


@pytest.mark.parametrize("locale", ["de", "en"])
def test_every_mail_says_what_its_link_does(app, client, runner, confirmed, mailbox, locale):
    assert runner.invoke(args=["lists", "update", "newsletter", "--goodbye"]).exit_code == 0
    address = f"{locale}@example.org"
    unsubscribe_path = confirmed(address, locale=locale, first_name="Kim")
    confirm_mail, welcome_mail = mailbox.to(address)

    label, subject = CONFIRM[locale]
    text, html = _parts(confirm_mail)
    assert confirm_mail["Subject"] == subject
    confirm_url = re.search(r"http://newsletter\.test/confirm/\S+", text).group(0)
    assert f"{label}:\n{confirm_url}\n" in text  # the link's label says what it does
    assert (label, confirm_url) in _anchors(html)  # the button
    # The HTML part names actions, never prints a token URL; the text part has the URL.
    assert all(not text_.startswith("http") for text_, _ in _anchors(html))
    assert f'<html lang="{locale}">' in html
    assert "Kim" in text and "Kim" in html
    _assert_text_is_wrapped(text)

    text, html = _parts(welcome_mail)
    unsubscribe_url = f"http://newsletter.test{unsubscribe_path}"
    assert f"{UNSUBSCRIBE[locale]}:\n{unsubscribe_url}\n" in text
    assert (UNSUBSCRIBE[locale], unsubscribe_url) in _anchors(html)
    _assert_text_is_wrapped(text)

    assert client.post(unsubscribe_path).status_code == 303
    deliver(app)
    goodbye = mailbox.to(address)[-1]
    assert goodbye["Subject"] == GOODBYE[locale]
    text, html = _parts(goodbye)
    assert "Example Newsletter" in " ".join(text.split()) and "Example Newsletter" in html
    assert "Kim" not in text + html  # the name was deleted with the withdrawal
    assert _anchors(html) == [] and "http" not in text  # nothing left to click
    assert goodbye["List-Unsubscribe"] is None
    _assert_text_is_wrapped(text)


def test_no_goodbye_mail_unless_the_list_asks_for_it(app, client, confirmed, mailbox):
    unsubscribe_path = confirmed("anna@example.org")
    assert client.post(unsubscribe_path).status_code == 303
    deliver(app)
    assert len(mailbox.to("anna@example.org")) == 2  # confirm + welcome only


@pytest.fixture
def yellow_brand(app_config):
    app_config.update(OPTIN_BRAND_NAME="Beispiel GmbH", OPTIN_BRAND_COLOR="#ffcc00")


def test_mails_take_the_brand(yellow_brand, confirmed, mailbox):
    confirmed("anna@example.org")
    _, html = _parts(mailbox.to("anna@example.org")[0])
    assert "border-top:4px solid #ffcc00;" in html  # the brand's own colour on the card
    # The button: white text on a shade of the brand colour dark enough for it (near-black
    # text on yellow would turn white on yellow in clients that invert mails).
    shade = readable_shade("#ffcc00", ("#ffffff",))
    assert shade != "#ffcc00" and contrast_ratio(shade, "#ffffff") >= AA_TEXT
    assert f"background-color:{shade};border:2px solid {shade};" in html
    assert "color:#ffffff;text-decoration:none;" in html
    assert "Viele Grüße<br>Beispiel GmbH" in html


# --- operator templates: a mail of one's own in the built-in frame, or a frame of one's own ---


@pytest.fixture
def own_templates(app_config, tmp_path):
    """OPTIN_TEMPLATE_DIR's email/ folder (ask for it before ``app``); write mails there."""
    folder = tmp_path / "my-templates"
    (folder / "email").mkdir(parents=True)
    app_config["OPTIN_TEMPLATE_DIR"] = str(folder)
    return folder / "email"


def _recorded_confirmation(client) -> dict:
    proof = client.get(PROOF, headers=AUTH).json
    return next(m for m in proof["consents"][0]["mails"] if m["kind"] == "confirmation_sent")


def test_an_operators_mail_extends_the_built_in_frame(own_templates, app, client, confirmed, mailbox):
    (own_templates / "confirm.de.html").write_text(
        '{% extends "base.html" %}\n'
        "{% block title %}Nur noch ein Klick{% endblock %}\n"
        "{% block preheader %}Bestätigen Sie „{{ list_name }}“.{% endblock %}\n"
        '{% block content %}<p><a href="{{ confirm_url }}">Jetzt bestätigen</a></p>{% endblock %}\n'
        "{% block footer %}Unsere eigene Fußzeile.{% endblock %}\n")
    confirmed("anna@example.org")
    confirm_mail, welcome_mail = mailbox.to("anna@example.org")

    text, html = _parts(confirm_mail)
    confirm_url = re.search(r"http://newsletter\.test/confirm/\S+", text).group(0)  # built-in text
    assert _anchors(html) == [("Jetzt bestätigen", confirm_url)]
    assert '<html lang="de">' in html and "<title>Nur noch ein Klick</title>" in html
    assert 'role="presentation"' in html and ">Nur noch ein Klick</h1>" in html  # our frame
    assert ">Bestätigen Sie „Example Newsletter“.</div>" in html
    assert ">Unsere eigene Fußzeile.</p>" in html
    assert "Willkommen bei „Example Newsletter“</h1>" in _parts(welcome_mail)[1]  # not overridden

    sent = _recorded_confirmation(client)
    assert sent["template"] == "confirm.de" and sent["matches_current_template"] is True
    assert sent["template_sha256"] == app.extensions["optin.mail_templates"].version("confirm.de").sha256
    assert sent["template_sha256"] != MailTemplates().version("confirm.de").sha256


def test_an_operators_frame_shapes_every_mail_and_its_recorded_version(
        own_templates, app, client, confirmed, mailbox):
    imprint = "<p>Beispiel GmbH · Musterstraße 1 · 10115 Berlin</p>"
    base = (TEMPLATE_DIR / "email" / "base.html").read_text()
    (own_templates / "base.html").write_text(base.replace("</div>\n</body>", f"{imprint}\n</div>\n</body>"))
    confirmed("anna@example.org")
    confirm_mail, welcome_mail = mailbox.to("anna@example.org")

    text, html = _parts(confirm_mail)
    confirm_url = re.search(r"http://newsletter\.test/confirm/\S+", text).group(0)
    assert ("Anmeldung bestätigen", confirm_url) in _anchors(html)  # the built-in mail ...
    assert imprint in html and imprint in _parts(welcome_mail)[1]  # ... in the operator's frame

    sent = _recorded_confirmation(client)
    assert sent["matches_current_template"] is True
    assert sent["template_sha256"] != MailTemplates().version("confirm.de").sha256
    assert imprint in sent["template_source"]["layouts"]["base.html"]
    assert "{{ confirm_url }}" in sent["template_source"]["text"]
