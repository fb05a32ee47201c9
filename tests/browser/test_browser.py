"""The whole flow in a real browser: Debian's Chromium driven by Playwright.

A landing page on a second origin embeds the form (as marketing would paste
it). With JavaScript it submits by fetch() and answers inline; without, it is
a plain form post that lands on our thank-you page. The test then reads the
mail the service sent (a real SMTP server), opens the confirmation link,
checks that opening it confirmed nothing, clicks Confirm, and unsubscribes
from the page, in German and in English.

Every page is photographed at desktop and phone width, light and dark, into
``tests/screenshots/`` and checked with axe-core: no serious or critical
violation. Our pages run under their real Content-Security-Policy: axe is
injected through the DevTools protocol (which a page's CSP does not govern)
rather than by turning the CSP off, and a CSP violation fails the test.

Needs ``.ci/browser-deps.sh`` (chromium, playwright, axe-core); without them
these tests are skipped and say why.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from itsdangerous import TimestampSigner
from sqlalchemy import select
from werkzeug.serving import make_server

from optin.consent import lists
from optin.extensions import db
from optin.models import ConsentEvent, Subscription
from optin.web import embed

from ..conftest import Mailbox, build_app, deliver, settle_intake

pytestmark = pytest.mark.browser

HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = HERE.parent / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}"
    if not AXE.exists():
        return f"axe-core is not installed ({AXE.relative_to(HERE.parent.parent)})"
    return None


if reason := _missing():
    pytestmark = [pytestmark, pytest.mark.skip(reason=f"{reason}: run .ci/browser-deps.sh")]


# What each language's pages and form say (the test clicks buttons by their names).
TEXT = {
    "de": {
        "browser_locale": "en-US",  # the other language: the signup's language must win
        "submit": "Newsletter abonnieren",
        "invalid": "Bitte prüfen Sie Ihre Angaben.",
        "invalid_email": "Bitte geben Sie eine gültige E-Mail-Adresse ein",
        "success": "Fast geschafft!",
        "subject": "Bitte bestätigen Sie Ihre Anmeldung zu „Example Newsletter“",
        "confirm_heading": "Anmeldung zu „Example Newsletter“ bestätigen",
        "confirm": "Anmeldung bestätigen",
        "confirmed": "Vielen Dank – Ihre Anmeldung ist bestätigt",
        "already": "Ihre Anmeldung ist bereits bestätigt",
        "unsubscribe": "Abmelden",
        "unsubscribed": "Sie sind abgemeldet",
        "thanks": "Fast geschafft – bitte sehen Sie in Ihrem Posteingang nach",
        "error": "Bitte prüfen Sie Ihre Angaben",
        "expired": "Dieser Link ist abgelaufen",
        "resend": "Neuen Bestätigungslink senden",
        "resent": "Bitte sehen Sie in Ihrem Posteingang nach",
        "invalid_link": "Dieser Link funktioniert leider nicht",
    },
    "en": {
        "browser_locale": "de-DE",
        "submit": "Subscribe to the newsletter",
        "invalid": "Please check your entries.",
        "invalid_email": "Please enter a valid email address",
        "success": "Almost done!",
        "subject": "Please confirm your subscription to “Example Newsletter”",
        "confirm_heading": "Confirm your subscription to “Example Newsletter”",
        "confirm": "Confirm subscription",
        "confirmed": "Thank you – your subscription is confirmed",
        "already": "Your subscription is already confirmed",
        "unsubscribe": "Unsubscribe",
        "unsubscribed": "You’ve been unsubscribed",
        "thanks": "Almost done – please check your inbox",
        "error": "Please check your entries",
        "expired": "This link has expired",
        "resend": "Send me a new confirmation link",
        "resent": "Please check your inbox",
        "invalid_link": "Sorry, this link doesn’t work",
    },
}


# --- servers -------------------------------------------------------------------------------


class LandingPages(ThreadingHTTPServer):
    """The second origin: marketing's landing pages with the pasted snippet, per path."""

    daemon_threads = True

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.headers: dict[str, dict[str, str]] = {}  # per path, e.g. a Content-Security-Policy
        super().__init__(("127.0.0.1", 0), _LandingHandler)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _LandingHandler(BaseHTTPRequestHandler):
    server: LandingPages

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        body = self.server.pages.get(path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        for key, value in self.server.headers.get(path, {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write((body or "not found").encode())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


LANDING = """<!doctype html>
<html lang="{locale}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Acme – {title}</title></head>
<body style="font-family: Georgia, serif; margin: 0; background: #fffaf0; color: #222">
<main style="max-width: 40rem; margin: 0 auto; padding: 2rem 1rem">
<h1>Acme</h1><p>{title}</p>
{snippet}
</main></body></html>
"""


@dataclass
class Live:
    app: Any
    base_url: str
    landing: LandingPages
    mailbox: Mailbox
    problems: list[str] = field(default_factory=list)  # CSP violations, page errors

    def subscription(self, address: str) -> Subscription | None:
        with self.app.app_context():
            sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
            if sub is not None:
                db.session.expunge(sub)
            return sub

    def events(self, address: str) -> list[ConsentEvent]:
        with self.app.app_context():
            sub = db.session.scalar(select(Subscription).where(Subscription.email == address))
            events = list(db.session.scalars(select(ConsentEvent).where(
                ConsentEvent.subscription_id == sub.id).order_by(ConsentEvent.seq)))
            db.session.expunge_all()
            return events

    def link(self, address: str, kind: str) -> str:
        """The newest confirm/unsubscribe link mailed to ``address``."""
        body = self.mailbox.to(address)[-1].get_body(("plain",))
        found = re.findall(rf"{re.escape(self.base_url)}/{kind}/[A-Za-z0-9_.\-]+", body.get_content())
        assert found, f"no {kind} link in the last mail to {address}"
        return found[0]


@pytest.fixture
def live(app_config: dict[str, str], mailbox: Mailbox) -> Iterator[Live]:
    """The real app on a loopback port, and the landing pages on another."""
    with serve(app_config, mailbox) as running:
        yield running


@contextmanager
def serve(app_config: dict[str, str], mailbox: Mailbox) -> Iterator[Live]:
    """``live`` for any settings: the app, its list "newsletter" and the landing pages."""
    holder: dict[str, Any] = {}
    server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start), threaded=True)
    base_url = f"http://127.0.0.1:{server.server_port}"
    app_config["OPTIN_BASE_URL"] = base_url  # links in mails point at this server
    app = holder["app"] = build_app(app_config)
    landing = LandingPages()
    with app.app_context():
        mailing_list = lists.create_list("newsletter", "Example Newsletter", default_locale="de",
                                         origins=[landing.origin], send_goodbye=True)
        for locale, text in lists.DEMO_TEXTS.items():
            lists.add_consent_text(mailing_list, locale, text)
        for locale in lists.LOCALES:
            landing.pages[f"/{locale}"] = LANDING.format(
                locale=locale, title="Newsletter" if locale == "en" else "Unser Newsletter",
                snippet=embed.snippet(mailing_list, locale, base_url))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (server, landing)]
    for thread in threads:
        thread.start()
    yield Live(app, base_url, landing, mailbox)
    server.shutdown()
    landing.shutdown()
    landing.server_close()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    app.extensions["optin.mail_backend"].close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# --- what the test does on each page --------------------------------------------------------


def _watch(page: Any, live: Live) -> Any:
    """Record what must never happen on our pages: CSP violations and script errors."""
    page.set_default_timeout(10_000)
    def console(message: Any) -> None:
        if "Content Security Policy" in message.text and page.url.startswith(live.base_url):
            live.problems.append(f"{page.url}: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda error: live.problems.append(f"{page.url}: {error}"))
    return page


def shoot(page: Any, name: str, check: Callable[[str], None] | None = None) -> None:
    """Full-page screenshots at desktop and phone width, light and dark
    (``{name}-phone-dark.png``); nothing may scroll sideways. ``check(scheme)`` runs once
    per scheme (e.g. axe)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}-{scheme}.png"), full_page=True)
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= size["width"], f"{name} is {width}px wide at {size['width']}px"
        if check is not None:
            check(scheme)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(DESKTOP)


def assert_accessible(page: Any) -> None:
    """axe-core finds no serious or critical violation (at phone and desktop width)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        # The DevTools protocol is not bound by the page's CSP, a <script> tag would be.
        session = page.context.new_cdp_session(page)
        session.send("Runtime.evaluate", {"expression": AXE.read_text()})
        session.detach()
    for size in (PHONE, DESKTOP):
        page.set_viewport_size(size)
        violations = page.evaluate("""async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 5)}));
        }""")
        bad = [v for v in violations if v["impact"] in {"serious", "critical"}]
        assert bad == [], f"{page.url} at {size['width']}px: {bad}"
    page.set_viewport_size(DESKTOP)


def shoot_mail(context: Any, message: Any, name: str) -> None:
    """A mail's HTML part as a mail client shows it (a blank page: no CSP of ours)."""
    page = context.new_page()
    page.set_content(message.get_body(("html",)).get_content())
    shoot(page, name)
    page.close()


def check(page: Any, name: str) -> None:
    shoot(page, name)
    assert_accessible(page)


def heading(page: Any) -> str:
    return page.locator("h1").inner_text()


def tab_to(page: Any, name: str, limit: int = 15) -> None:
    """Press Tab until the button called ``name`` has the focus, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement && document.activeElement.innerText")
        if focused and focused.strip() == name:
            outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", "the focused button shows no focus ring"
            return
    raise AssertionError(f"Tab never reached the button {name!r}")


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["de", "en"])
def test_signup_with_javascript_confirm_and_unsubscribe(browser, live, locale, monkeypatch):
    t = TEXT[locale]
    address = f"anna.{locale}@example.org"
    context = browser.new_context(viewport=DESKTOP, locale=t["browser_locale"])
    page = _watch(context.new_page(), live)
    landing_url = f"{live.landing.origin}/{locale}"

    # The landing page on another origin, the form as pasted.
    page.goto(landing_url)
    page.wait_for_selector("form[data-optin-ready]")  # embed.js from our origin has run
    check(page, f"{locale}-landing")

    # A field error comes back from the service and shows next to the field.
    email = page.get_by_label(re.compile("E-Mail-Adresse|Email address"))
    email.fill("anna@invalid")  # the browser accepts it; the service does not
    email.press("Enter")
    error = page.locator('[data-optin-error-for="email"]')
    error.wait_for(state="visible")
    assert t["invalid_email"] in error.inner_text()
    assert email.get_attribute("aria-invalid") == "true"
    assert page.evaluate("() => document.activeElement.name") == "email"
    assert page.locator(".optin-status").inner_text() == t["invalid"]
    check(page, f"{locale}-landing-field-error")
    assert live.subscription("anna@invalid") is None

    # Corrected, it is accepted in place: no navigation, the success text instead of the form.
    email.fill(address)
    page.get_by_label(re.compile("Vorname|First name")).fill("Anna")
    page.get_by_role("button", name=t["submit"]).click()
    status = page.locator(".optin-status")
    status.filter(has_text=t["success"]).wait_for()
    assert page.url == landing_url
    assert error.is_hidden() and page.locator(".optin-body").is_hidden()
    assert page.evaluate("() => document.activeElement.className").startswith("optin-status")
    if locale == "de":
        # "… in unserer E-/Mail": the answer's "E-Mail" never breaks after its hyphen.
        kept = status.locator("span").evaluate_all(
            "spans => spans.filter(s => getComputedStyle(s).whiteSpace === 'nowrap')"
            ".map(s => s.textContent)")
        assert "E-Mail." not in kept and "E-Mail" in kept, kept
    check(page, f"{locale}-landing-success")

    settle_intake(live.app)  # the worker takes the signup at once
    sub = live.subscription(address)
    assert sub is not None and sub.status == "pending"
    assert (sub.locale, sub.first_name, sub.source_url) == (locale, "Anna", landing_url)

    # The mail; the link opens a page, and opening it confirms nothing.
    deliver(live.app)
    [mail] = live.mailbox.to(address)
    assert mail["Subject"] == t["subject"]
    confirm_url = live.link(address, "confirm")
    page.goto(confirm_url)
    assert heading(page) == t["confirm_heading"]
    check(page, f"{locale}-confirm")
    assert live.subscription(address).status == "pending"
    assert "confirmed" not in [e.kind for e in live.events(address)]

    page.get_by_role("button", name=t["confirm"]).click()
    page.locator("h1", has_text=t["confirmed"]).wait_for()
    check(page, f"{locale}-confirmed")
    settle_intake(live.app)  # the click is queued; the worker records it at once
    assert live.subscription(address).status == "confirmed"
    [confirmed] = [e for e in live.events(address) if e.kind == "confirmed"]
    assert confirmed.ip == "127.0.0.1"
    assert "Chrome" in (confirmed.user_agent or "")

    page.goto(confirm_url)
    assert heading(page) == t["already"]
    check(page, f"{locale}-already-confirmed")

    # The welcome mail's unsubscribe link; the button, reached by keyboard.
    deliver(live.app)
    shoot_mail(context, live.mailbox.to(address)[-1], f"{locale}-mail-welcome")
    page.goto(live.link(address, "unsubscribe"))
    check(page, f"{locale}-unsubscribe")
    assert live.subscription(address).status == "confirmed"
    tab_to(page, t["unsubscribe"])
    page.keyboard.press("Enter")
    page.locator("h1", has_text=t["unsubscribed"]).wait_for()
    check(page, f"{locale}-unsubscribed")
    assert live.subscription(address).status == "unsubscribed"

    deliver(live.app)  # the list sends a goodbye mail
    shoot_mail(context, live.mailbox.to(address)[-1], f"{locale}-mail-goodbye")
    shoot_mail(context, mail, f"{locale}-mail-confirm")

    # An expired link offers a fresh mail.
    other = f"late.{locale}@example.org"
    with live.app.test_client() as client:
        assert client.post("/v1/subscriptions", json={
            "email": other, "list": "newsletter", "locale": locale, "consent_text_version": 1,
        }).status_code == 202
    real_timestamp = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp",
                        lambda self: real_timestamp(self) - 100 * 3600)
    deliver(live.app)  # the mail's link is signed 100 hours ago
    monkeypatch.undo()
    with live.app.app_context():
        row = db.session.scalar(select(Subscription).where(Subscription.email == other))
        row.last_mail_requested_at = row.created_at.replace(year=2000)  # past the throttle
        db.session.commit()
    page.goto(live.link(other, "confirm"))
    assert heading(page) == t["expired"]
    check(page, f"{locale}-link-expired")
    page.get_by_role("button", name=t["resend"]).click()
    page.locator("h1", has_text=t["resent"]).wait_for()
    check(page, f"{locale}-resent")
    deliver(live.app)
    assert len(live.mailbox.to(other)) == 2

    # A broken link names no signup: the page speaks the browser's language.
    page.goto(f"{live.base_url}/confirm/not-a-real-token")
    assert heading(page) == TEXT["en" if locale == "de" else "de"]["invalid_link"]
    check(page, f"{locale}-link-invalid")

    context.close()
    assert live.problems == []


@pytest.mark.parametrize("locale", ["de", "en"])
def test_signup_without_javascript(browser, live, locale):
    t = TEXT[locale]
    address = f"nojs.{locale}@example.org"
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False,
                                  locale=t["browser_locale"])
    page = _watch(context.new_page(), live)
    landing_url = f"{live.landing.origin}/{locale}"

    # An address the browser lets through but the service refuses: our error page.
    page.goto(landing_url)
    page.get_by_label(re.compile("E-Mail-Adresse|Email address")).fill("anna@invalid")
    page.get_by_role("button", name=t["submit"]).click()
    page.wait_for_url(f"{live.base_url}/v1/subscriptions")
    assert t["error"] in page.content()
    shoot(page, f"{locale}-error")

    # The plain form post: 303 to the thank-you page in the form's language.
    page.goto(landing_url)
    page.get_by_label(re.compile("E-Mail-Adresse|Email address")).fill(address)
    page.get_by_role("button", name=t["submit"]).click()
    page.wait_for_url(re.compile(re.escape(f"{live.base_url}/thanks")))
    assert heading(page) == t["thanks"]
    shoot(page, f"{locale}-thanks")
    settle_intake(live.app)  # the worker takes the signup at once
    sub = live.subscription(address)
    assert sub is not None and (sub.status, sub.locale) == ("pending", locale)
    # Without the script the form sends no source URL: the Referer names the page, which a
    # browser cuts to the landing page's origin when it posts to another site.
    assert sub.source_url == f"{live.landing.origin}/"
    [signup_event] = [e for e in live.events(address) if e.kind == "signup_requested"]
    assert signup_event.details["source_url_from"] == "referer"
    context.close()

    # The same pages with JavaScript on, for axe (they have no script of their own).
    context = browser.new_context(viewport=DESKTOP, locale=t["browser_locale"])
    page = _watch(context.new_page(), live)
    page.goto(f"{live.base_url}/thanks?list=newsletter&locale={locale}")
    assert heading(page) == t["thanks"]
    assert_accessible(page)
    page.goto(f"{live.base_url}/nowhere")
    check(page, f"{locale}-not-found")
    context.close()
    assert live.problems == []


@pytest.fixture
def live_dev(tmp_path: Path) -> Iterator[Live]:
    """The app as `optin serve` runs it in development: demo page, mail as files."""
    holder: dict[str, Any] = {}
    server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start), threaded=True)
    base_url = f"http://127.0.0.1:{server.server_port}"
    app = holder["app"] = build_app({
        "OPTIN_ENV": "development",
        "OPTIN_INSTANCE_PATH": str(tmp_path / "instance"),
        "OPTIN_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "OPTIN_BASE_URL": base_url,
    })
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Live(app, base_url, landing=None, mailbox=None)  # type: ignore[arg-type]
    server.shutdown()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize("locale", ["de", "en"])
def test_demo_page_end_to_end(browser, live_dev, locale):
    """What the README promises a newcomer: demo page → mail folder → confirm → unsubscribe."""
    t = TEXT[locale]
    live = live_dev
    context = browser.new_context(viewport=DESKTOP, locale=t["browser_locale"])
    page = _watch(context.new_page(), live)

    page.goto(f"{live.base_url}/?lang={locale}")
    page.wait_for_selector("form[data-optin-ready]")
    check(page, f"{locale}-demo")
    page.get_by_label(re.compile("E-Mail-Adresse|Email address")).fill("demo@example.org")
    page.get_by_role("button", name=t["submit"]).click()
    page.locator(".optin-status", has_text=t["success"]).wait_for()

    deliver(live.app)  # `optin serve` has a worker in the process; here the test runs it
    page.get_by_role("link", name=re.compile("Mail-Ordner öffnen|Open the mail folder")).click()
    page.get_by_role("link", name=re.compile("Bestätigungslink öffnen|Open the confirmation link")) \
        .first.wait_for()
    check(page, f"{locale}-demo-mail-folder")
    page.get_by_role("link", name=re.compile("Bestätigungslink öffnen|Open the confirmation link")) \
        .first.click()
    page.get_by_role("button", name=t["confirm"]).click()
    page.locator("h1", has_text=t["confirmed"]).wait_for()
    settle_intake(live.app)  # the click is queued; the worker records it at once
    assert live.subscription("demo@example.org").status == "confirmed"

    deliver(live.app)
    page.goto(f"{live.base_url}/dev/mail?lang={locale}")
    page.get_by_role("link", name=re.compile("Abmeldelink öffnen|Open the unsubscribe link")) \
        .first.click()
    page.get_by_role("button", name=t["unsubscribe"]).click()
    page.locator("h1", has_text=t["unsubscribed"]).wait_for()
    assert live.subscription("demo@example.org").status == "unsubscribed"
    context.close()
    assert live.problems == []


# --- the proof of consent, printed ------------------------------------------------------------


@pytest.mark.parametrize("locale", ["de", "en"])
def test_proof_of_consent_printed_to_pdf(browser, live, locale, tmp_path):
    """The operator's proof page in Chromium: accessible under its own CSP (the inline
    style allowed by its hash), printed to A4 with the running header and "page x of y"."""
    from ..conftest import ADMIN_TOKEN

    client = live.app.test_client()
    address = f"proof-{locale}@example.org"
    assert client.post("/v1/subscriptions", json={
        "email": address, "list": "newsletter", "consent_text_version": 1, "locale": locale,
        "first_name": "Anna"}, environ_base={"REMOTE_ADDR": "192.0.2.10"}).status_code == 202
    deliver(live.app)
    confirm = live.link(address, "confirm").removeprefix(live.base_url)
    assert client.post(confirm, environ_base={"REMOTE_ADDR": "198.51.100.20"},
                       follow_redirects=True).status_code == 200
    deliver(live.app)

    context = browser.new_context(locale="de-DE" if locale == "de" else "en-GB",
                                  extra_http_headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    page = _watch(context.new_page(), live)
    page.goto(f"{live.base_url}/v1/contacts/proof?email={address}&list=newsletter&format=html")
    title = {"de": "Nachweis der Einwilligung (Double-Opt-In)",
             "en": "Proof of consent (double opt-in)"}[locale]
    assert heading(page) == title
    assert page.evaluate("() => document.documentElement.lang") == locale
    # The inline style applied (the CSP let it through): hashes are set in monospace.
    font = page.evaluate("() => getComputedStyle(document.querySelector('code.hash')).fontFamily")
    assert "Mono" in font or "monospace" in font
    check(page, f"proof-{locale}")
    pdf = tmp_path / f"proof-{locale}.pdf"
    page.pdf(path=str(pdf), format="A4", prefer_css_page_size=True, print_background=True)
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert live.problems == []
    context.close()
    if shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils not installed (.ci/proof-deps.sh): printed, not read back")
    import subprocess

    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True, timeout=60).stdout
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True,
                          timeout=60).stdout
    assert "(A4)" in info
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    word = {"de": ("Seite", "von"), "en": ("Page", "of")}[locale]
    assert f"{word[0]} 1 {word[1]} {pages}" in text and f"{word[0]} {pages} {word[1]} {pages}" in text
    assert "Example Newsletter GmbH" in text and title in text
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-f", "1", "-l", "2", str(pdf),
                    str(SCREENSHOTS / f"proof-{locale}-printed")], check=True, timeout=120)
    assert list(SCREENSHOTS.glob(f"proof-{locale}-printed-*1.png"))
