"""Issue 18 in a real browser: the embed never strands a visitor, pages and mails carry
the brand readably (light, dark, any brand colour), every end state has a next step.

Uses the servers of ``test_browser`` (the app on one loopback port, marketing's landing
pages on another). Screenshots of every page and mail, light and dark, at desktop and
phone width, go to ``tests/screenshots/`` (German; ``test_browser`` shoots both
languages in light).
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from optin.consent import lists
from optin.extensions import db
from optin.models import MailingList
from optin.web import embed

from ..conftest import Mailbox, deliver, settle_intake
from .test_browser import (
    AXE,
    CHROMIUM_ARGS,
    DESKTOP,
    LANDING,
    PHONE,
    SCREENSHOTS,
    TEXT,
    Live,
    _watch,
    browser,  # noqa: F401  (the module's Chromium, a fixture)
    heading,
    pytestmark,  # noqa: F401  (skipped without Chromium, like test_browser)
    serve,
    shoot,
)

PHONES = [{"width": 360, "height": 640}, {"width": 375, "height": 667},
          {"width": 390, "height": 844}]
#: Light brand colours that broke contrast before (amber measured 2.06:1), and a dark one.
BRAND_COLOURS = ["#f59e0b", "#22c55e", "#7c3aed"]
FOOTER = {"website_url": "https://www.example.com/", "imprint_url": "https://www.example.com/impressum",
          "privacy_policy_url": "https://www.example.com/datenschutz",
          "postal_address": "Musterstraße 1\n10115 Berlin",
          "controller": "Example GmbH"}
assert CHROMIUM_ARGS  # the same Chromium flags as test_browser (through its fixture)


def _set_list(live: Live, **changes: Any) -> None:
    with live.app.app_context():
        lists.update_list(lists.get_list("newsletter"), **changes)


def _snippet(live: Live, locale: str, base_url: str | None = None,
             page_url: str | None = None) -> str:
    with live.app.app_context():
        mailing_list = db.session.scalar(select(MailingList).where(MailingList.slug == "newsletter"))
        return embed.snippet(mailing_list, locale, base_url or live.base_url, page_url)


def _landing(live: Live, path: str, snippet: str, locale: str = "de",
             headers: dict[str, str] | None = None) -> str:
    live.landing.pages[path] = LANDING.format(locale=locale, title="Newsletter", snippet=snippet)
    live.landing.headers[path] = headers or {}
    return f"{live.landing.origin}{path}"


def _axe(page: Any, *, only_contrast: bool = False) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations of the page as it is now."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        session = page.context.new_cdp_session(page)
        session.send("Runtime.evaluate", {"expression": AXE.read_text()})
        session.detach()
    options = '{runOnly: ["color-contrast"]}' if only_contrast else '{resultTypes: ["violations"]}'
    violations = page.evaluate(f"""async () => {{
        const result = await axe.run(document, {options});
        return result.violations.map(v => ({{id: v.id, impact: v.impact,
            nodes: v.nodes.map(n => n.target.join(" ") + " " + n.failureSummary).slice(0, 3)}}));
    }}""")
    return [v for v in violations if v["impact"] in {"serious", "critical"}]


def shoot_all(page: Any, name: str) -> None:
    """Desktop and phone, light and dark; nothing may scroll sideways; axe finds nothing
    serious in either scheme."""

    def axe_finds_nothing(scheme: str) -> None:
        assert _axe(page) == [], f"{name} ({scheme})"

    shoot(page, name, axe_finds_nothing)


def shoot_mail_all(context: Any, message: Any, name: str) -> Any:
    page = context.new_page()
    page.set_content(message.get_body(("html",)).get_content())
    shoot_all(page, name)
    return page


def _signup(live: Live, address: str, locale: str = "de", **extra: Any) -> None:
    with live.app.test_client() as client:
        assert client.post("/v1/subscriptions", json={
            "email": address, "list": "newsletter", "locale": locale, "consent_text_version": 1,
            **extra}).status_code == 202
    deliver(live.app)


@pytest.fixture
def site(app_config: dict[str, str], mailbox: Mailbox) -> Iterator[Live]:
    """``live`` with a list that has its footer filled in, like a real company's."""
    app_config["OPTIN_BRAND_NAME"] = "Example"
    with serve(app_config, mailbox) as running:
        _set_list(running, **FOOTER)
        yield running


# --- 1, 2, 3: the embed never strands a visitor ---------------------------------------------


class _Failing(ThreadingHTTPServer):
    """A proxy in front of a dead service: 502 to everything, no CORS headers."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FailingHandler)


class _FailingHandler(BaseHTTPRequestHandler):
    def _fail(self) -> None:
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<h1>502 Bad Gateway</h1>")

    do_GET = do_POST = do_OPTIONS = _fail  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("outage", ["down", "proxy_502"])
def test_embed_outage_answers_in_place(browser, site, outage):  # noqa: F811
    """Service down, or a proxy's 5xx without CORS headers: the inline failure, no navigation."""
    if outage == "down":
        base = f"http://127.0.0.1:{_closed_port()}"
    else:
        proxy = _Failing()
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{proxy.server_address[1]}"
    # embed.js itself comes from the live service (a CDN copy would, too).
    snippet = _snippet(site, "de", base).replace(f"{base}/static/embed.js",
                                                 f"{site.base_url}/static/embed.js")
    url = _landing(site, "/outage", snippet)
    context = browser.new_context(viewport=PHONE)
    page = _watch(context.new_page(), site)
    page.goto(url)
    page.wait_for_selector("form[data-optin-ready]")
    page.get_by_label("E-Mail-Adresse").fill("anna@example.org")
    page.get_by_role("button", name=TEXT["de"]["submit"]).click()
    status = page.locator(".optin-status-error")
    status.wait_for()
    assert "nicht erreichbar" in status.inner_text()
    assert page.url == url  # the visitor stayed on the landing page
    assert page.get_by_label("E-Mail-Adresse").input_value() == "anna@example.org"
    if outage == "down":
        page.screenshot(path=str(SCREENSHOTS / "de-landing-service-down-phone-light.png"),
                        full_page=True)
    context.close()


def test_embed_cors_refusal_posts_plainly_warns_and_back_returns(browser, site):  # noqa: F811
    """An origin the list trusts for posts (a thank-you URL's) but not for fetch(): the
    plain post, a console warning naming the fix, and "Back" to the form's own page."""
    _set_list(site, origins=[], redirect_urls=[f"{site.landing.origin}/danke"])
    site.landing.pages["/danke"] = "<!doctype html><title>Danke</title><h1>Danke!</h1>"
    url = _landing(site, "/aktion/newsletter", _snippet(site, "de"))
    context = browser.new_context(viewport=DESKTOP)
    page = _watch(context.new_page(), site)
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    page.goto(url)
    page.wait_for_selector("form[data-optin-ready]")

    # An address the service refuses: its error page, and Back leads to the form's page
    # (the Referer would name only the origin).
    page.get_by_label("E-Mail-Adresse").fill("anna@invalid")
    page.get_by_role("button", name=TEXT["de"]["submit"]).click()
    page.wait_for_url(f"{site.base_url}/v1/subscriptions")
    assert heading(page) == "Bitte prüfen Sie Ihre Angaben"
    assert "Fehler 422" not in page.content()
    back = page.get_by_role("link", name="Zurück")
    assert back.get_attribute("href") == url
    fix = f"optin lists update newsletter --origin {site.landing.origin}"
    assert any(fix in w for w in warnings), warnings
    back.click()
    page.wait_for_url(url)

    page.wait_for_selector("form[data-optin-ready]")
    page.get_by_label("E-Mail-Adresse").fill("cors@example.org")
    page.get_by_role("button", name=TEXT["de"]["submit"]).click()
    page.wait_for_url(f"{site.landing.origin}/danke")
    settle_intake(site.app)  # the worker takes the signup at once
    assert site.subscription("cors@example.org").source_url == url
    context.close()


@pytest.mark.parametrize("policy", ["connect-src 'self'", "connect-src *"])
def test_embed_blocked_by_the_landing_pages_csp_says_so(browser, site, policy):  # noqa: F811
    """``form-action 'self'`` (with fetch() blocked too, or refused by CORS): a message in
    place instead of a silently dead button, and a warning with the CSP the form needs."""
    _set_list(site, origins=[] if policy == "connect-src *" else [site.landing.origin],
              redirect_urls=[f"{site.landing.origin}/danke"])
    csp = f"default-src 'self'; script-src 'self' 'unsafe-inline' {site.base_url}; " \
          f"style-src 'self' 'unsafe-inline' {site.base_url}; {policy}; form-action 'self'"
    url = _landing(site, "/strict", _snippet(site, "de"),
                   headers={"Content-Security-Policy": csp})
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    page.goto(url)
    page.wait_for_selector("form[data-optin-ready]")
    page.get_by_label("E-Mail-Adresse").fill("csp@example.org")
    page.get_by_role("button", name=TEXT["de"]["submit"]).click(no_wait_after=True)
    # The refused post leaves a navigation that never ends: poll the page itself.
    text = page.wait_for_function(
        "() => (document.querySelector('.optin-status-error') || {}).textContent").json_value()
    assert "lässt das Absenden des Formulars nicht zu" in text
    assert page.evaluate("() => location.href") == url
    assert any(f"form-action {site.base_url}" in w for w in warnings), warnings
    if policy == "connect-src 'self'":  # nothing reached the service
        settle_intake(site.app)  # (a queued signup would become a subscription now)
        assert site.subscription("csp@example.org") is None
    # (With connect-src open, the fetch reached the service, which took the signup though
    # CORS kept its answer from the page: the message promises nothing either way.)
    if policy == "connect-src 'self'":
        page.screenshot(path=str(SCREENSHOTS / "de-landing-csp-blocked-phone-light.png"),
                        full_page=True)
    context.close()


@pytest.mark.parametrize("locale", ["de", "en"])
def test_the_thank_you_page_leads_back_without_javascript(browser, site, locale):  # noqa: F811
    """No script: the snippet's source_url (``--page-url``) is the thank-you page's "Back";
    a snippet without it leads back to the list's website, not to the bare site root the
    browser's Referer names."""
    _set_list(site, redirect_urls=[])  # form posts land on our thank-you page
    url = f"{site.landing.origin}/aktion/{locale}"
    page_url = _landing(site, f"/aktion/{locale}", _snippet(site, locale, page_url=url), locale)
    plain = _landing(site, f"/ohne/{locale}", _snippet(site, locale), locale)
    back_label = {"de": "Zurück zur Website", "en": "Back to the website"}[locale]
    email_label = re.compile("E-Mail-Adresse|Email address")
    context = browser.new_context(viewport=PHONE, java_script_enabled=False)
    page = _watch(context.new_page(), site)
    for form, address, expected in ((page_url, f"back.{locale}@example.org", url),
                                    (plain, f"plain.{locale}@example.org", FOOTER["website_url"])):
        page.goto(form)
        page.get_by_label(email_label).fill(address)
        page.get_by_role("button", name=TEXT[locale]["submit"]).click()
        page.wait_for_url(re.compile(re.escape(f"{site.base_url}/thanks")))
        assert heading(page) == TEXT[locale]["thanks"]
        back = page.get_by_role("link", name=back_label)
        assert back.get_attribute("href") == expected, (form, page.url)
        if expected == url:
            thanks = page.url
            back.click()
            page.wait_for_url(url)
    settle_intake(site.app)
    assert site.subscription(f"back.{locale}@example.org").source_url == url
    context.close()
    # Photographed with JavaScript on (Playwright's colour-scheme emulation needs it).
    context = browser.new_context(viewport=DESKTOP)
    page = _watch(context.new_page(), site)
    page.goto(thanks)
    shoot_all(page, f"{locale}-thanks-back")
    context.close()
    assert site.problems == []


# --- 6, 7: what is confirmed, and the button on the first screen ----------------------------


LONG_TEXT = {
    "de": "Ja, ich möchte den Newsletter per E-Mail erhalten: Neuigkeiten, Angebote und "
          "Einladungen zu Veranstaltungen, etwa einmal im Monat. Meine Einwilligung kann ich "
          "jederzeit über den Abmeldelink in jeder E-Mail widerrufen. Hinweise zum Datenschutz, "
          "auch zur Weitergabe an ActiveCampaign, finden Sie in unserer Datenschutzerklärung.",
    "en": "Yes, I would like to receive the newsletter by email: news, offers and invitations "
          "to events, about once a month. I can withdraw my consent at any time with the "
          "unsubscribe link in every email. See our privacy policy for how we handle your "
          "data, including passing it to ActiveCampaign.",
}


@pytest.mark.parametrize("locale", ["de", "en"])
def test_confirm_page_masks_the_address_and_shows_the_button_first(browser, site, locale):  # noqa: F811
    with site.app.app_context():
        lists.add_consent_text(lists.get_list("newsletter"), locale, LONG_TEXT[locale])
    address = f"annabell.{locale}@example.org"
    _signup(site, address, locale, consent_text_version=2, first_name="Annabell")
    context = browser.new_context(viewport=DESKTOP)
    page = _watch(context.new_page(), site)
    page.goto(site.link(address, "confirm"))
    masked = "a••••@example.org"
    assert page.locator(".address").inner_text() == masked
    assert address not in page.content()
    # The privacy policy is linked on the consent text's own words, not after it.
    policy = page.locator("blockquote.consent a")
    assert policy.get_attribute("href") == FOOTER["privacy_policy_url"]
    assert policy.inner_text() in {"Datenschutzerklärung", "privacy policy"}
    button = page.get_by_role("button", name=TEXT[locale]["confirm"])
    for size in PHONES:
        page.set_viewport_size(size)
        box = button.bounding_box()
        assert box is not None and box["y"] + box["height"] <= size["height"], (size, box)
    if locale == "de":
        shoot_all(page, "de-confirm")

    button.click()
    page.locator("h1", has_text=TEXT[locale]["confirmed"]).wait_for()
    deliver(site.app)
    page.goto(site.link(address, "unsubscribe"))
    assert page.locator(".address").inner_text() == masked
    context.close()
    assert site.problems == []


# --- 4, 13: any brand colour, light and dark, pages and mails -------------------------------


@pytest.mark.parametrize("colour", BRAND_COLOURS)
def test_brand_colours_keep_contrast_on_pages_and_mails(browser, app_config, mailbox, colour):  # noqa: F811
    app_config["OPTIN_BRAND_COLOR"] = colour
    with serve(app_config, mailbox) as live:
        _set_list(live, **FOOTER)
        address = "farbe@example.org"
        _signup(live, address)
        context = browser.new_context(viewport=DESKTOP)
        page = _watch(context.new_page(), live)
        checked = []
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            # Links, the secondary button, the muted text: on the card and on the page.
            for url in (live.link(address, "confirm"), f"{live.base_url}/unsubscribe/broken",
                        f"{live.base_url}/thanks?list=newsletter&locale=de"):
                page.goto(url)
                assert _axe(page, only_contrast=True) == [], (colour, scheme, url)
                checked.append(url)
            page.goto(live.link(address, "confirm"))
            if scheme == "light":
                page.get_by_role("button", name="Anmeldung bestätigen").click()
            else:  # confirmed already: the page the button redirects to
                page.goto(live.link(address, "confirm") + "?done=1")
            page.locator("h1", has_text=TEXT["de"]["confirmed"]).wait_for()
            assert _axe(page, only_contrast=True) == [], (colour, scheme, "confirmed")
        deliver(live.app)
        mail = live.mailbox.to(address)[-1]
        mail_page = context.new_page()
        mail_page.set_content(mail.get_body(("html",)).get_content())
        for scheme in ("light", "dark"):
            mail_page.emulate_media(color_scheme=scheme)
            assert _axe(mail_page, only_contrast=True) == [], (colour, scheme, "welcome mail")
        if colour == "#f59e0b":
            page.emulate_media(color_scheme="light")
            page.goto(f"{live.base_url}/unsubscribe/broken")
            page.screenshot(path=str(SCREENSHOTS / "de-brand-amber-desktop-light.png"),
                            full_page=True)
        context.close()
        assert len(checked) == 6 and live.problems == []


def test_dark_mode_pages_are_dark(browser, site):  # noqa: F811
    context = browser.new_context(viewport=PHONE, color_scheme="dark")
    page = _watch(context.new_page(), site)
    page.goto(f"{site.base_url}/thanks?list=newsletter&locale=de")
    card = page.evaluate("() => getComputedStyle(document.querySelector('.card')).backgroundColor")
    text = page.evaluate("() => getComputedStyle(document.body).color")
    assert card == "rgb(31, 41, 55)" and text == "rgb(243, 244, 246)", (card, text)
    assert _axe(page) == []
    context.close()


# --- 5, 8, 9, 10, 11, 12, 14: every end state, every mail -----------------------------------


#: What the flow reads and clicks in each language.
FLOW = {
    "de": {"browser": "de-DE", "policy": "datenschutzerklärung", "email": "E-Mail-Adresse",
           "first_name": "Vorname", "greeting": "Guten Tag Anna,",
           "why": "Sie erhalten diese E-Mail", "imprint": "Impressum",
           "next": "Weiter zur Website", "unsubscribe_footer": "Vom Newsletter abmelden",
           "never_passed": "geben Ihre Adresse an niemanden",
           "confirmed_on": r"Bestätigt am \d{1,2}\. \w+ 20\d\d, \d\d:\d\d\xa0Uhr\.",
           "one_more": "nur noch eine E-Mail, die die Abmeldung bestätigt",
           "again": "Wieder anmelden", "one_more_after": "noch eine E-Mail, die das bestätigt",
           "ended": "Diese Anmeldung ist beendet", "ended_on": r"am \d{1,2}\. \w+ 20\d\d beendet",
           "anew": "Neu anmelden", "send_link": "Abmeldelink senden",
           "relink_subject": "Ihr neuer Abmeldelink für „Example Newsletter“"},
    "en": {"browser": "en-GB", "policy": "privacy policy", "email": "Email address",
           "first_name": "First name", "greeting": "Hello Anna,",
           "why": "You’re receiving this email", "imprint": "Imprint",
           "next": "Continue to the website", "unsubscribe_footer": "Unsubscribe",
           "never_passed": "never pass your address on",
           "confirmed_on": r"Confirmed on \d{1,2} \w+ 20\d\d, \d\d:\d\d\xa0\(CES?T\)\.",
           "one_more": "just one more email, confirming that you left",
           "again": "Sign up again", "one_more_after": "one more email confirming it",
           "ended": "This subscription has ended", "ended_on": r"ended on \d{1,2} \w+ 20\d\d\.",
           "anew": "Sign up again", "send_link": "Send unsubscribe link",
           "relink_subject": "Your new unsubscribe link for “Example Newsletter”"},
}


@pytest.mark.parametrize("locale", ["de", "en"])
def test_every_page_and_mail_next_steps_and_screenshots(browser, site, locale):  # noqa: F811
    """The whole flow in each language, each page and mail photographed light and dark."""
    w = FLOW[locale]
    _set_list(site, send_goodbye=True)
    form = _landing(site, "/newsletter", _snippet(site, locale), locale)
    context = browser.new_context(viewport=DESKTOP, locale=w["browser"])
    page = _watch(context.new_page(), site)
    page.goto(form)
    page.wait_for_selector("form[data-optin-ready]")
    assert page.locator(".optin-consent a").get_attribute("href") == FOOTER["privacy_policy_url"]
    assert page.locator(".optin-consent").inner_text().lower().count(w["policy"]) == 1
    page.get_by_label(w["email"]).fill("flow@example.org")
    page.get_by_label(re.compile(w["first_name"])).fill("Anna")
    page.get_by_role("button", name=TEXT[locale]["submit"]).click()
    page.locator(".optin-status", has_text=TEXT[locale]["success"]).wait_for()
    shoot_all(page, f"{locale}-landing-success")
    deliver(site.app)

    # The confirmation mail: the action as link text, the URL only in the text part.
    [confirm_mail] = site.mailbox.to("flow@example.org")
    html = confirm_mail.get_body(("html",)).get_content()
    text = confirm_mail.get_body(("plain",)).get_content()
    confirm_url = site.link("flow@example.org", "confirm")
    assert confirm_url in text and f">{confirm_url}<" not in html
    assert w["greeting"] in text and "Newsletter <" not in str(confirm_mail["From"])
    assert str(confirm_mail["From"]).startswith("Example <")
    for needed in ("Example GmbH", "Musterstraße 1", FOOTER["imprint_url"],
                   FOOTER["privacy_policy_url"], w["why"]):
        assert needed in text, needed
    shoot_mail_all(context, confirm_mail, f"{locale}-mail-confirm").close()

    page.goto(confirm_url)
    assert page.locator(".site-footer address").inner_text().startswith("Musterstraße 1")
    assert page.get_by_role("link", name=w["imprint"]).get_attribute("href") == FOOTER["imprint_url"]
    page.get_by_role("button", name=TEXT[locale]["confirm"]).click()
    page.locator("h1", has_text=TEXT[locale]["confirmed"]).wait_for()
    # POST-redirect-GET: the result is a GET page; reloading it asks nothing and changes nothing.
    assert page.url.endswith("?done=1")
    page.reload()
    assert heading(page) == TEXT[locale]["confirmed"]
    next_step = page.get_by_role("link", name=w["next"])
    assert next_step.get_attribute("href") == FOOTER["website_url"]
    shoot_all(page, f"{locale}-confirmed")
    page.goto(confirm_url)
    shoot_all(page, f"{locale}-already-confirmed")

    # The welcome mail: its button leads to the website, unsubscribing sits in the footer.
    deliver(site.app)
    welcome = site.mailbox.to("flow@example.org")[-1]
    html = welcome.get_body(("html",)).get_content()
    assert welcome["List-Unsubscribe"] and welcome["List-Unsubscribe-Post"]
    assert re.search(r'class="button-link" href="https://www\.example\.com/"', html)
    assert "button-link\" href=\"http://127.0.0.1" not in html
    assert w["unsubscribe_footer"] in html.split('class="footer"')[1]
    # Dry-run: nothing is passed on, so no processor is named (and nothing false said).
    assert "ActiveCampaign" not in html and w["never_passed"] not in html
    assert re.search(w["confirmed_on"], html), html
    shoot_mail_all(context, welcome, f"{locale}-mail-welcome").close()

    # Unsubscribe: the goodbye mail is on, so the page promises exactly one more mail.
    unsubscribe_url = site.link("flow@example.org", "unsubscribe")
    page.goto(unsubscribe_url)
    assert w["one_more"] in page.inner_text("body")  # the text read (E-Mail kept together)
    shoot_all(page, f"{locale}-unsubscribe")
    page.get_by_role("button", name=TEXT[locale]["unsubscribe"]).click()
    page.locator("h1", has_text=TEXT[locale]["unsubscribed"]).wait_for()
    assert page.url == unsubscribe_url  # POST-redirect-GET
    again = page.get_by_role("link", name=w["again"])
    assert again.get_attribute("href") == form  # the form it came from
    assert w["one_more_after"] in page.inner_text("body")
    shoot_all(page, f"{locale}-unsubscribed")
    deliver(site.app)
    goodbye = site.mailbox.to("flow@example.org")[-1]
    assert w["again"] in goodbye.get_body(("html",)).get_content()
    assert form in goodbye.get_body(("plain",)).get_content()
    shoot_mail_all(context, goodbye, f"{locale}-mail-goodbye").close()

    # The old confirmation link now says honestly what happened, with the way back.
    page.goto(confirm_url)
    assert heading(page) == w["ended"]
    assert re.search(w["ended_on"], page.content())
    assert page.get_by_role("link", name=w["anew"]).get_attribute("href") == form
    shoot_all(page, f"{locale}-ended")

    # A broken unsubscribe link offers a fresh one, answered alike for every address.
    _signup(site, "keep@example.org", locale)
    page.goto(site.link("keep@example.org", "confirm"))
    page.get_by_role("button", name=TEXT[locale]["confirm"]).click()
    page.locator("h1", has_text=TEXT[locale]["confirmed"]).wait_for()
    deliver(site.app)
    before = len(site.mailbox.to("keep@example.org"))
    answers = []
    for address in ("keep@example.org", "nobody@example.org", "flow@example.org", "kaputt"):
        page.goto(f"{site.base_url}/unsubscribe/abgeschnitten")
        assert heading(page) == TEXT[locale]["invalid_link"]
        if address == "keep@example.org":
            shoot_all(page, f"{locale}-unsubscribe-link-invalid")
        page.get_by_label(w["email"]).fill(address)
        page.evaluate("() => document.querySelector('#relink-email').type = 'text'")  # "kaputt"
        page.get_by_role("button", name=w["send_link"]).click()
        page.locator("h1", has_text=TEXT[locale]["resent"]).wait_for()
        answers.append((page.url, page.locator("main").inner_text()))
    assert len(set(answers)) == 1, answers  # the same page, whoever asked
    shoot_all(page, f"{locale}-unsubscribe-link-sent")
    deliver(site.app)
    assert site.mailbox.to("nobody@example.org") == []
    assert len(site.mailbox.to("flow@example.org")) == 3  # withdrawn: nothing new
    fresh = site.mailbox.to("keep@example.org")[before:]
    assert len(fresh) == 1 and fresh[0]["Subject"] == w["relink_subject"]
    shoot_mail_all(context, fresh[0], f"{locale}-mail-unsubscribe-link").close()
    page.goto(site.link("keep@example.org", "unsubscribe"))
    page.get_by_role("button", name=TEXT[locale]["unsubscribe"]).click()
    page.locator("h1", has_text=TEXT[locale]["unsubscribed"]).wait_for()
    assert site.subscription("keep@example.org").status == "unsubscribed"

    # The rest of the pages: thanks, not found, invalid confirm link, error.
    page.goto(f"{site.base_url}/thanks?list=newsletter&locale={locale}")
    shoot_all(page, f"{locale}-thanks")
    page.goto(f"{site.base_url}/confirm/abgeschnitten")
    shoot_all(page, f"{locale}-link-invalid")
    page.goto(f"{site.base_url}/nirgends")
    assert "Fehler 404" not in page.content() and "Error 404" not in page.content()
    shoot_all(page, f"{locale}-not-found")
    context.close()
    assert site.problems == []


def test_broken_logo_shows_the_brand_name(browser, app_config, mailbox):  # noqa: F811
    app_config["OPTIN_BRAND_NAME"] = "Example Shop"
    with serve(app_config, mailbox) as live:
        app_config_logo = f"{live.base_url}/static/no-such-logo.png"
        live.app.extensions["optin.brand"] = {**live.app.extensions["optin.brand"],
                                              "logo_url": app_config_logo}
        context = browser.new_context(viewport=PHONE)
        page = context.new_page()
        page.goto(f"{live.base_url}/thanks?list=newsletter&locale=de")
        logo = page.locator("img.logo")
        assert logo.evaluate("img => img.complete && img.naturalWidth === 0")  # it failed
        # The alt text is drawn in its place, readable: the box has the text's width.
        box = logo.bounding_box()
        assert box is not None and box["width"] > 40 and box["height"] > 10, box
        assert logo.get_attribute("alt") == "Example Shop"
        page.screenshot(path=str(SCREENSHOTS / "de-logo-broken-phone-light.png"))
        context.close()
