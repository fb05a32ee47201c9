"""Security headers on every HTML page (error and 429 pages included), no caching of pages
that carry tokens, and everything user-supplied escaped in pages and mails."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from optin import create_app
from optin.consent import lists

from ..conftest import deliver, links, signup

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
XSS_NAME = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(2)>'


def assert_secure_page(response) -> None:
    """The headers every HTML page carries, and no script or style the CSP would block."""
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"  # no script at all, inline or not
    assert "script-src" not in directives or "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-inline'" not in csp
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    blocked = _InlineCode()
    blocked.feed(response.get_data(as_text=True))
    assert blocked.found == []


class _InlineCode(HTMLParser):
    """Script and style the CSP would block: inline scripts, handlers, style elements/attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if (tag == "script" and "src" not in names) or tag == "style":
            self.found.append(f"<{tag}>")
        self.found += [f"{tag} {name}=" for name in names if name.startswith("on") or name == "style"]


def _form_post(client, **fields):
    data = {"email": "anna@example.org", "list": "newsletter", "consent_text_version": "1",
            **fields}
    return client.post("/v1/subscriptions", data=data, headers=BROWSER)


# --- headers on every page ------------------------------------------------------------------


def test_every_page_of_the_flow_carries_the_headers(app, client, newsletter, mailbox):
    pages = {"thanks": client.get(_form_post(client).headers["Location"].replace(
        "https://www.example.com/danke", "/thanks?list=newsletter&locale=en"), headers=BROWSER)}
    deliver(app)
    confirm = links(mailbox.to("anna@example.org")[-1])["confirm"]
    pages["confirm"] = client.get(confirm, headers=BROWSER)
    pages["confirmed"] = client.post(confirm, headers=BROWSER, follow_redirects=True)
    pages["already_confirmed"] = client.get(confirm, headers=BROWSER)
    deliver(app)
    unsubscribe = links(mailbox.to("anna@example.org")[-1])["unsubscribe"]
    pages["unsubscribe"] = client.get(unsubscribe, headers=BROWSER)
    pages["unsubscribed"] = client.post(unsubscribe, headers=BROWSER, follow_redirects=True)
    pages["ended"] = client.get(confirm, headers=BROWSER)  # withdrawn: the honest page
    pages["link_invalid"] = client.get("/unsubscribe/cut-short", headers=BROWSER)
    statuses = {name: response.status_code for name, response in pages.items()}
    assert statuses == {**dict.fromkeys(pages, 200), "link_invalid": 404}
    for response in pages.values():
        assert_secure_page(response)


@pytest.mark.parametrize(("make", "status"), [
    (lambda c: c.get("/nowhere", headers=BROWSER), 404),
    (lambda c: c.get("/confirm/not-a-token", headers=BROWSER), 404),
    (lambda c: c.get("/v1/subscriptions", headers=BROWSER), 405),
    (lambda c: _form_post(c, email="not an address"), 422),
    (lambda c: _form_post(c, list="nope"), 422),
    (lambda c: c.post("/v1/subscriptions", data={"email": "anna@example.org", "list": "newsletter",
                                                 "consent_text_version": "1"},
                      headers={**BROWSER, "Origin": "https://evil.example"}), 403),
    (lambda c: c.post("/v1/subscriptions", data="x" * 70_000,
                      headers={**BROWSER, "Content-Type": "application/x-www-form-urlencoded"}), 413),
])
def test_error_pages_carry_the_headers(client, newsletter, make, status):
    response = make(client)
    assert response.status_code == status
    assert_secure_page(response)


def test_429_pages_carry_the_headers_and_are_not_cached(app_config, newsletter, app,
                                                       limit_window):
    app_config["OPTIN_RATELIMIT_LINKS"] = "1/minute"
    client = create_app(app_config).test_client()
    client.get("/confirm/not-a-token", headers=BROWSER)
    response = client.get("/confirm/not-a-token", headers=BROWSER)
    assert response.status_code == 429
    assert_secure_page(response)
    assert response.headers["Cache-Control"] == "no-store"


def test_the_database_down_page_carries_the_headers(app_config, tmp_path):
    app_config["OPTIN_DATABASE_URL"] = f"sqlite:///{tmp_path}/missing-folder/x.db"
    response = create_app(app_config).test_client().get("/thanks?list=newsletter", headers=BROWSER)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert_secure_page(response)


# --- no caching of pages with tokens ----------------------------------------------------------


def test_pages_carrying_tokens_are_never_cached(app, client, newsletter, mailbox):
    assert signup(client, "anna@example.org").status_code == 202
    deliver(app)
    confirm = links(mailbox.to("anna@example.org")[-1])["confirm"]
    answers = [client.get(confirm), client.post(f"{confirm}/resend"), client.post(confirm),
               client.get("/confirm/not-a-token")]
    deliver(app)
    unsubscribe = links(mailbox.to("anna@example.org")[-1])["unsubscribe"]
    answers += [client.get(unsubscribe), client.post(unsubscribe, data={
        "List-Unsubscribe": "One-Click"})]
    for response in answers:
        assert response.headers["Cache-Control"] == "no-store", response.request.path
        assert response.headers["Referrer-Policy"] == "no-referrer"


# --- escaping -------------------------------------------------------------------------------------


def test_names_are_escaped_in_the_mails_html_part(app, client, newsletter, mailbox):
    response = signup(client, "anna@example.org", first_name=XSS_NAME, last_name=XSS_ATTR)
    assert response.status_code == 202
    deliver(app)
    mail = mailbox.to("anna@example.org")[-1]
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert XSS_NAME in text  # plain text is shown as text, not markup
    assert "\n" not in str(mail["To"]).strip()

    client.post(links(mail)["confirm"])
    deliver(app)
    welcome = mailbox.to("anna@example.org")[-1]
    assert welcome["Subject"] != mail["Subject"]
    assert "<script>" not in welcome.get_body(preferencelist=("html",)).get_content()


def test_list_names_and_consent_texts_are_escaped_on_pages_and_in_mails(app, client, mailbox):
    with app.app_context():
        hostile = lists.create_list("hostile", f"News {XSS_NAME}", default_locale="en",
                                    origins=["https://www.example.com"])
        lists.add_consent_text(hostile, "en", f"I agree.\n{XSS_ATTR} <b>bold</b>")
    response = client.post("/v1/subscriptions", json={
        "email": "anna@example.org", "list": "hostile", "consent_text_version": 1})
    assert response.status_code == 202
    deliver(app)
    mail = mailbox.to("anna@example.org")[-1]
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "<b>bold" not in html and "<img src=x" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "I agree.<br>" in html  # the text's line breaks, and nothing else, become markup

    page = client.get(links(mail)["confirm"], headers=BROWSER)
    assert_secure_page(page)
    body = page.get_data(as_text=True)
    assert "<script>alert" not in body and "<b>bold" not in body
    assert "News &lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_what_a_visitor_typed_is_escaped_on_the_error_page(client, newsletter):
    page = _form_post(client, email=f"{XSS_NAME}@example.org", first_name=XSS_ATTR * 100)
    assert page.status_code == 422
    assert_secure_page(page)
    assert "<script>alert" not in page.get_data(as_text=True)


@pytest.mark.parametrize(("referrer", "shown"), [
    ("javascript:alert(1)", False),
    ("data:text/html,<script>alert(1)</script>", False),
    ("https://www.example.com/newsletter", True),
])
def test_the_back_link_is_only_a_web_page(client, newsletter, referrer, shown):
    page = client.post("/v1/subscriptions", data={"list": "newsletter"},
                       headers={**BROWSER, "Referer": referrer})
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    assert ('class="button button-secondary" href="' in html) is shown
    assert "javascript:" not in html and "data:text/html" not in html
