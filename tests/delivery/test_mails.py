"""What the confirmation, welcome and goodbye mails look like, in HTML and text."""

from __future__ import annotations

import re
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest

from ..conftest import deliver


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


CONFIRM = {"de": ("Anmeldung bestätigen", "Bitte bestätigen Sie Ihre Anmeldung: Example Newsletter"),
           "en": ("Confirm my subscription", "Please confirm your subscription: Example Newsletter")}
UNSUBSCRIBE = {"de": "Newsletter abbestellen", "en": "Unsubscribe from this newsletter"}
GOODBYE = {"de": "Ihre Abmeldung ist bestätigt: Example Newsletter",
           "en": "You have been unsubscribed: Example Newsletter"}


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
    assert (confirm_url, confirm_url) in _anchors(html)  # the copyable fallback
    assert f'<html lang="{locale}">' in html
    assert "Kim" in text and "Kim" in html
    _assert_text_is_wrapped(text)

    text, html = _parts(welcome_mail)
    unsubscribe_url = f"http://newsletter.test{unsubscribe_path}"
    assert f"{UNSUBSCRIBE[locale]}:\n{unsubscribe_url}\n" in text
    assert (UNSUBSCRIBE[locale], unsubscribe_url) in _anchors(html)
    _assert_text_is_wrapped(text)

    assert client.post(unsubscribe_path).status_code == 200
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
    assert client.post(unsubscribe_path).status_code == 200
    deliver(app)
    assert len(mailbox.to("anna@example.org")) == 2  # confirm + welcome only


@pytest.fixture
def yellow_brand(app_config):
    app_config.update(OPTIN_BRAND_NAME="Beispiel GmbH", OPTIN_BRAND_COLOR="#ffcc00")


def test_mails_take_the_brand(yellow_brand, confirmed, mailbox):
    confirmed("anna@example.org")
    _, html = _parts(mailbox.to("anna@example.org")[0])
    assert "background-color:#ffcc00;color:#111827;" in html  # readable button text
    assert "Viele Grüße<br>Beispiel GmbH" in html
