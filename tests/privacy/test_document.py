"""The proof as a document for a court: German and English, dates with the zone named and UTC
beside, full hashes, the style inlined (CSP by hash), a running header and "page x of y",
and the A4 PDF the service makes (read back with poppler's pdftotext and pdfinfo)."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import optin
from optin.models import EventKind
from optin.privacy import document, wording

from ..conftest import ADMIN_TOKEN, deliver, links

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROOF = "/v1/contacts/proof?email=anna@example.org&list=newsletter"
HEX64 = re.compile(r"\b[0-9a-f]{64}\b")
needs_poppler = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                   reason="needs poppler-utils (pdftotext, pdfinfo): "
                                          ".ci/proof-deps.sh installs them")


@pytest.fixture
def anna(app, client, newsletter, mailbox):
    assert client.post("/v1/subscriptions", json={
        "email": "anna@example.org", "list": "newsletter", "consent_text_version": 1,
        "first_name": "Anna", "source_url": "https://www.example.com/landing"},
        headers={"User-Agent": "SignupBrowser/1"},
        environ_base={"REMOTE_ADDR": "192.0.2.10"}).status_code == 202
    deliver(app)
    [mail] = mailbox.to("anna@example.org")
    assert client.post(links(mail)["confirm"], environ_base={
        "REMOTE_ADDR": "198.51.100.20"}).status_code == 303
    deliver(app)
    return mail


def test_both_languages_say_everything():
    assert wording.LABELS["de"].keys() == wording.LABELS["en"].keys()
    assert wording.EVENTS["de"].keys() == wording.EVENTS["en"].keys()
    assert len(wording.LEGAL_NOTES["de"]) == len(wording.LEGAL_NOTES["en"])
    assert wording.TEXT["de"].keys() == wording.TEXT["en"].keys()
    assert wording.MINIMIZED_NOTE.keys() == {"de", "en"}


def test_every_event_kind_and_channel_is_named_in_both_languages():
    kinds = {kind.value for kind in EventKind}
    assert kinds <= wording.EVENTS["de"].keys() and kinds <= wording.EVENTS["en"].keys()
    assert wording.CHANNELS["de"].keys() == wording.CHANNELS["en"].keys()
    assert wording.WITHDRAWN_VIA["de"].keys() == wording.WITHDRAWN_VIA["en"].keys()
    # Every origin the code records an event with (origin="…" in optin/) has a name.
    source = "\n".join(path.read_text() for path in Path(optin.__file__).parent.rglob("*.py"))
    origins = set(re.findall(r'origin(?:: str)? ?= ?"([a-z_]+)"', source))
    assert origins and origins <= wording.CHANNELS["en"].keys()


def test_a_one_click_withdrawal_is_said_in_words_not_code(client, anna, mailbox):
    [welcome] = mailbox.to("anna@example.org")[1:]
    assert client.post(links(welcome)["unsubscribe"], data={
        "List-Unsubscribe": "One-Click"}).status_code == 200
    for locale, said, channel in (
            ("de", "über die Ein-Klick-Abmeldung im Mailprogramm", "Ein-Klick-Abmeldung"),
            ("en", "by the one-click unsubscribe of the mail client", "one-click unsubscribe")):
        page = client.get(PROOF + f"&locale={locale}&format=html", headers=AUTH).get_data(
            as_text=True)
        assert said in page and f"<td>{channel}</td>" in page, locale
        assert "one_click" not in page and "<td>form</td>" not in page, locale
        text = client.application.test_cli_runner().invoke(args=[
            "proof", "anna@example.org", "--list", "newsletter", "--locale", locale]).output
        assert said in text and "one_click" not in text, locale
    # The day the proof goes is the day it is minimized, not the last day it is kept
    # (DESIGN: kept until 31 December of the withdrawal year + 3 years).
    lapse = datetime.now(UTC).astimezone(ZoneInfo("Europe/Berlin")).year + 4
    for locale, said in (("de", f"und am 1. Januar {lapse} minimiert"),
                         ("en", f"and minimized on 1 January {lapse}")):
        page = client.get(PROOF + f"&locale={locale}&format=html", headers=AUTH).get_data(
            as_text=True)
        assert said in " ".join(page.split()), locale
        assert f"bis 1. Januar {lapse}" not in page and f"until 1 January {lapse}" not in page


def english_left(text: str, *tables: dict) -> list[str]:
    """The English words of ``tables`` (``wording`` dictionaries by language) found in a
    German ``text``: each English phrase that differs from its German one, up to its first
    placeholder, if it is long enough to mean something."""
    flat = " ".join(text.split())
    found = []
    for table in tables:
        for key, english in table["en"].items():
            phrase = " ".join(english.split("{")[0].split()).strip(" :(")
            german = table["de"][key].split("{")[0].strip(" :(")
            if len(phrase) >= 10 and phrase not in german and phrase in flat:
                found.append(phrase)
    return found


@pytest.mark.parametrize(("moment", "locale", "expected"), [
    (datetime(2026, 12, 1, 7, 41, 4, tzinfo=UTC), "de",
     "1. Dezember 2026, 08:41:04 Uhr (MEZ, UTC+1)"),
    (datetime(2026, 7, 1, 7, 41, 4, tzinfo=UTC), "de", "1. Juli 2026, 09:41:04 Uhr (MESZ, UTC+2)"),
    (datetime(2026, 12, 1, 7, 41, 4, tzinfo=UTC), "en", "1 December 2026, 08:41:04 (CET, UTC+1)"),
])
def test_dates_name_their_zone_with_utc_beside(moment, locale, expected):
    shown = str(document.when(moment.isoformat(), locale, "Europe/Berlin"))
    assert f">{expected}</time>" in shown
    assert f'<span class="utc">{moment:%Y-%m-%d %H:%M:%S} UTC</span>' in shown


def test_a_hostile_controller_name_cannot_leave_its_css_string():
    literal = document.css_string('Evil"; } body { display: none } </style><script>')
    assert literal.startswith('"') and literal.endswith('"') and literal.count('"') == 2
    assert "<" not in literal and "}" not in literal and ";" not in literal


def _style(page: str) -> str:
    [css] = re.findall(r"<style>(.*?)</style>", page, re.S)
    return css


def test_the_api_answers_a_self_contained_page_in_the_readers_language(client, anna):
    german = client.get(PROOF, headers={**AUTH, "Accept": "text/html", "Accept-Language": "de"})
    english = client.get(PROOF + "&locale=en", headers={**AUTH, "Accept": "text/html",
                                                        "Accept-Language": "de"})
    assert german.headers["Content-Language"] == "de" and english.headers["Content-Language"] == "en"
    de, en = german.get_data(as_text=True), english.get_data(as_text=True)
    assert '<html lang="de">' in de and "Nachweis der Einwilligung (Double-Opt-In)" in de
    assert '<html lang="en">' in en and "Proof of consent (double opt-in)" in en
    assert "Die Kopie unten entspricht der Mail, wie sie versandt wurde" in de
    assert "The copy below matches the mail as sent" in en
    for page, response in ((de, german), (en, english)):
        css = _style(page)
        digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}'" in response.headers["Content-Security-Policy"]
        assert "<link" not in page and "@page" in css and "counter(pages)" in css
        # Every hash in full, in a monospace block of its own.
        hashes = re.findall(r'<code class="hash">([^<]*)</code>', page)
        assert hashes and all(HEX64.fullmatch(h) or len(h) == 36 for h in hashes)
        assert anna_hash(page) in hashes
    # The running header names the controller, the address hash and the document id.
    css = _style(de)
    assert document.css_string("Example Newsletter GmbH") in css
    doc_id = re.search(r'name="dcterms.identifier" content="([^"]+)"', de).group(1)
    assert document.css_string(f"Dokument-ID {doc_id}") in css
    assert document.css_string(f"Adress-Hash (HMAC-SHA256): {anna_hash(de)}") in css
    assert "Seite" in css and "Musterstraße 1" in de and "10115 Berlin" in de


def anna_hash(page: str) -> str:
    found = re.search(r"hash \(HMAC-SHA256\)</th><td><code class=\"hash\">([0-9a-f]{64})", page,
                      re.I)
    assert found, "the address hash row"
    return found.group(1)


def _pdf_text(path: Path) -> tuple[str, int, str]:
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                          text=True, check=True, timeout=60).stdout
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True,
                          timeout=60).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    return text, pages, info


@needs_poppler
def test_the_pdf_from_the_cli_is_a_german_a4_document(app, runner, anna, tmp_path):
    out = tmp_path / "proof.pdf"
    result = runner.invoke(args=["proof", "anna@example.org", "--list", "newsletter",
                                 "--format", "pdf", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF-")
    text, pages, info = _pdf_text(out)
    assert "595.276 x 841.89 pts (A4)" in info and "Nachweis der Einwilligung" in info
    assert 2 <= pages <= 12
    # "Seite x von y" on every page, and the running header with the controller.
    assert [int(n) for n in re.findall(r"Seite (\d+) von " + str(pages), text)] == list(
        range(1, pages + 1))
    assert text.count("Example Newsletter GmbH") >= pages
    for expected in ("anna@example.org", "192.0.2.10", "198.51.100.20", "SignupBrowser/1",
                     "Guten Tag Anna,", "⟦token⟧", "https://www.example.com/landing",
                     "Die Kopie unten entspricht der Mail, wie sie versandt wurde",
                     "Uhr (MEZ, UTC+1)" if datetime.now(UTC).month in (1, 2, 11, 12) else "Uhr (",
                     "Musterstraße 1"):
        assert expected in text, expected
    # Full hashes, each on one line: the address hash (in the footer of every page too) and
    # the hash of the text part as sent.
    address_hash = re.search(r"[0-9a-f]{64}", text.split("Adress-Hash (HMAC-SHA256)", 1)[1]).group()
    assert text.count(address_hash) >= pages
    assert text.count("Dokument-ID") >= pages
    # The ledger table's long German event names break at a syllable, never between
    # two letters ("Bestätigungsmai" / "l versandt").
    assert "Bestätigungs" in text and not re.search(r"Bestätigungsmai\s", text)


@needs_poppler
def test_the_pdf_from_the_api_in_english(client, anna, tmp_path):
    response = client.get(PROOF + "&format=pdf&locale=en", headers=AUTH)
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.headers["Content-Language"] == "en"
    assert response.headers["Content-Disposition"].startswith('inline; filename="proof-newsletter-')
    out = tmp_path / "en.pdf"
    out.write_bytes(response.data)
    text, pages, _ = _pdf_text(out)
    assert f"Page 1 of {pages}" in text and "Proof of consent (double opt-in)" in text
    assert "The copy below matches the mail as sent" in text
    by_accept = client.get(PROOF, headers={**AUTH, "Accept": "application/pdf"})
    assert by_accept.mimetype == "application/pdf"
