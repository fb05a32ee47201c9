"""The pages people see: language, brand, operator templates, no third parties."""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

import pytest
from flask import Flask
from itsdangerous import TimestampSigner
from sqlalchemy import select

from optin import create_app
from optin.config import ConfigError
from optin.consent import lists
from optin.extensions import db
from optin.models import MailingList, Subscription
from optin.ops.pages import pick_locale

from ..conftest import ADMIN_TOKEN, build_app, deliver, links, make_config, signup

# --- which language ---------------------------------------------------------------------


def _list(default_locale: str) -> MailingList:
    return MailingList(slug="x", name="X", default_locale=default_locale)


@pytest.mark.parametrize(("preferred", "query", "accept", "default", "expected"), [
    ("en", None, "de-DE,de;q=0.9", "de", "en"),      # the signup's locale wins
    (None, "en", "de-DE,de;q=0.9", "de", "en"),      # then the form's locale parameter
    (None, None, "de-AT,de;q=0.9,en;q=0.5", "en", "de"),  # then the browser (de-AT → de)
    (None, None, "en-GB,en;q=0.8", "de", "en"),
    (None, None, "fr-FR,fr;q=0.9", "de", "de"),      # then the list's default
    (None, None, None, "de", "de"),
    ("fr", "es", "fr", None, "en"),                  # unknown everywhere: English
])
def test_pick_locale(app, preferred, query, accept, default, expected):
    headers = {"Accept-Language": accept} if accept else {}
    path = f"/?locale={query}" if query else "/"
    with app.test_request_context(path, headers=headers):
        mailing_list = _list(default) if default else None
        assert pick_locale(preferred, mailing_list) == expected


def test_confirm_page_speaks_the_signups_language(client, signed_up):
    for address, locale, heading, button in (
        ("de@example.org", "de", "Anmeldung zu „Example Newsletter“ bestätigen",
         "Anmeldung bestätigen"),
        ("en@example.org", "en", "Confirm your subscription to “Example Newsletter”",
         "Confirm subscription"),
    ):
        path = signed_up(address, locale=locale)
        # The browser asks for the other language: the signup's language still wins.
        page = client.get(path, headers={"Accept-Language": "en" if locale == "de" else "de"})
        html = page.get_data(as_text=True)
        assert page.headers["Content-Language"] == locale
        assert f'<html lang="{locale}">' in html
        assert f"<h1>{heading}</h1>" in html
        assert f'<button type="submit" class="button">{button}</button>' in html


def test_thanks_page_follows_the_forms_locale(client, newsletter):
    page = client.get("/thanks?list=newsletter&locale=en", headers={"Accept-Language": "de"})
    assert page.headers["Content-Language"] == "en"
    assert "Almost done – please check your inbox" in page.get_data(as_text=True)
    page = client.get("/thanks?list=newsletter", headers={"Accept-Language": "fr"})
    assert page.headers["Content-Language"] == "de"  # the list's default
    assert "„Example Newsletter“" in page.get_data(as_text=True)


def test_error_page_after_a_form_post_names_the_field_in_the_forms_language(client, newsletter):
    page = client.post("/v1/subscriptions", data={
        "email": "anna@invalid", "list": "newsletter", "locale": "en", "consent_text_version": "1",
    }, headers={"Accept": "text/html", "Accept-Language": "de"})
    html = page.get_data(as_text=True)
    assert page.status_code == 422
    assert page.mimetype == "text/html"
    assert page.headers["Content-Language"] == "en"
    assert "Error 422" not in html  # a title that helps, no status code
    assert "Please check your entries" in html
    assert "<strong>Email address</strong>: The part after the @-sign is not valid" in html


# --- what the pages load ------------------------------------------------------------------


class _Resources(HTMLParser):
    """Every URL a page makes the browser fetch, and any inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag in {"script", "style"} or "style" in attr:
            self.inline.append(tag)
        if tag in {"img", "script", "iframe"} and attr.get("src"):
            self.fetched.append(attr["src"] or "")
        if tag == "link" and attr.get("href"):
            self.fetched.append(attr["href"] or "")


def _resources(html: str) -> _Resources:
    parser = _Resources()
    parser.feed(html)
    return parser


def test_pages_load_only_our_own_stylesheets(client, signed_up, app):
    confirm_path = signed_up()
    pages = [
        client.get(confirm_path),
        client.get("/thanks?list=newsletter"),
        client.get("/confirm/not-a-token"),
        client.get("/nowhere", headers={"Accept": "text/html"}),
    ]
    for page in pages:
        found = _resources(page.get_data(as_text=True))
        assert found.inline == [], page.request.path
        assert found.fetched == ["/static/favicon.svg", "/static/optin.css", "/brand.css"]
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp


def test_error_page_shows_its_status_in_the_visitors_language(client, newsletter):
    page = client.get("/nowhere", headers={"Accept": "text/html", "Accept-Language": "de"})
    assert page.status_code == 404
    html = page.get_data(as_text=True)
    assert "Fehler 404" not in html and "<h1>Seite nicht gefunden</h1>" in html

    page = client.post("/v1/subscriptions", data={
        "email": "anna@invalid", "list": "newsletter", "locale": "de", "consent_text_version": "1",
    }, headers={"Accept": "text/html", "Accept-Language": "en"})
    html = page.get_data(as_text=True)
    assert "<h1>Bitte prüfen Sie Ihre Angaben</h1>" in html
    assert "<strong>E-Mail-Adresse</strong>: Bitte geben Sie eine gültige E-Mail-Adresse ein" in html
    assert "@-sign" not in html  # no English in a German page


# --- brand ------------------------------------------------------------------------------


@pytest.fixture
def branded(app_config, mailbox, tmp_path):
    app_config.update(OPTIN_BRAND_NAME="Beispiel GmbH", OPTIN_BRAND_COLOR="#FFCC00",
                      OPTIN_BRAND_LOGO_URL="https://cdn.example.com/logo.svg")
    return app_config


def test_brand_css_carries_the_colours_and_a_readable_button_text(branded, client):
    css = client.get("/brand.css")
    assert css.status_code == 200
    assert css.mimetype == "text/css"
    body = css.get_data(as_text=True)
    assert "--optin-primary: #ffcc00;" in body
    assert "--optin-on-primary: #111827;" in body  # dark text on yellow, not white
    assert "--optin-bg: #ffffff;" in body
    again = client.get("/brand.css", headers={"If-None-Match": css.headers["ETag"]})
    assert again.status_code == 304

    page = client.get("/thanks").get_data(as_text=True)
    assert '<img class="logo" src="https://cdn.example.com/logo.svg" alt="Beispiel GmbH">' in page
    assert "<title>Please confirm your subscription · Beispiel GmbH</title>" in page


def test_dark_accent_gets_white_button_text(client):
    assert "--optin-on-primary: #ffffff;" in client.get("/brand.css").get_data(as_text=True)


def test_low_contrast_brand_is_reported_at_start(tmp_path, caplog):
    config = make_config(tmp_path, OPTIN_ENV="development", OPTIN_BRAND_TEXT_COLOR="#dddddd",
                         OPTIN_BRAND_LOGO_URL="http://cdn.example.com/logo.png")
    with caplog.at_level(logging.WARNING):
        create_app(config)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "OPTIN_BRAND_TEXT_COLOR #dddddd on OPTIN_BRAND_BACKGROUND_COLOR #ffffff has " \
        "contrast 1.4:1" in messages
    assert "OPTIN_BRAND_LOGO_URL is not https://" in messages


def test_a_light_brand_colour_is_no_problem_any_more(tmp_path, caplog):
    """Text uses shades derived from the brand colour, so any accent colour reads."""
    with caplog.at_level(logging.WARNING):
        create_app(make_config(tmp_path, OPTIN_BRAND_COLOR="#dddddd"))
    assert "OPTIN_BRAND_COLOR" not in " ".join(r.getMessage() for r in caplog.records)


def test_an_http_logo_is_refused_at_start_in_production(tmp_path):
    """The pages' CSP allows https: images only: in production that is a start-up error."""
    with pytest.raises(ConfigError, match="OPTIN_BRAND_LOGO_URL must be an https:// URL"):
        create_app(make_config(tmp_path, OPTIN_BRAND_LOGO_URL="http://cdn.example.com/logo.png"))
    create_app(make_config(tmp_path, OPTIN_BRAND_LOGO_URL="https://cdn.example.com/logo.png"))


@pytest.mark.parametrize("variable", ["OPTIN_BRAND_TEXT_COLOR", "OPTIN_BRAND_BACKGROUND_COLOR"])
def test_brand_colours_are_validated(tmp_path, variable):
    with pytest.raises(ConfigError, match=variable):
        create_app(make_config(tmp_path, **{variable: "white"}))


# --- operator templates ------------------------------------------------------------------


def _app_with_own_templates(app_config, tmp_path, files: dict[str, str]) -> Flask:
    """The app with OPTIN_TEMPLATE_DIR holding ``files`` (path -> source) and the
    ``newsletter`` list with its German and English consent texts."""
    overrides = tmp_path / "my-templates"
    for path, source in files.items():
        (overrides / path).parent.mkdir(parents=True, exist_ok=True)
        (overrides / path).write_text(source)
    app_config["OPTIN_TEMPLATE_DIR"] = str(overrides)
    app = build_app(app_config)
    with app.app_context():
        mailing_list = lists.create_list("newsletter", "Example Newsletter")
        for locale, text in lists.DEMO_TEXTS.items():
            lists.add_consent_text(mailing_list, locale, text)
    return app


def test_operator_templates_win_over_the_built_in_ones(app_config, tmp_path, mailbox):
    app = _app_with_own_templates(app_config, tmp_path, {
        "pages/thanks.en.html":
            '{% extends "pages/base.html" %}{% block title %}Danke{% endblock %}'
            "{% block content %}<h1>Our own thank-you for {{ list.name }}</h1>{% endblock %}",
        "email/confirm.en.subject.txt": "Action needed: {{ list_name }}",
    })
    client = app.test_client()
    page = client.get("/thanks?list=newsletter&locale=en").get_data(as_text=True)
    assert "<h1>Our own thank-you for Example Newsletter</h1>" in page
    assert 'href="/brand.css"' in page  # the built-in base.html still frames it
    de_page = client.get("/thanks?list=newsletter&locale=de").get_data(as_text=True)
    assert "Fast geschafft" in de_page  # not overridden: built-in

    assert signup(client, "anna@example.org", locale="en").status_code == 202
    deliver(app)
    [mail] = mailbox.to("anna@example.org")
    assert mail["Subject"] == "Action needed: Example Newsletter"
    assert "Confirm subscription" in mail.get_body(("plain",)).get_content()  # built-in body
    app.extensions["optin.mail_backend"].close()


def test_an_operators_page_frame_frames_the_pages_but_not_the_proof(app_config, tmp_path, mailbox):
    """A base.html of one's own (copied before the built-in one had a parent, say)
    frames every page; the proof of consent keeps its own frame and all its content."""
    app = _app_with_own_templates(app_config, tmp_path, {
        "pages/base.html":
            '<!doctype html>\n<html lang="{{ locale }}"><head><title>{% block title %}{% endblock %}'
            "</title></head>\n<body><header>Unser Kopf</header>{% block content %}{% endblock %}"
            "<footer>Impressum</footer></body></html>\n",
    })
    client = app.test_client()
    page = client.get("/thanks?list=newsletter&locale=de").get_data(as_text=True)
    assert "<header>Unser Kopf</header>" in page and "<footer>Impressum</footer>" in page
    assert "<h1>Fast geschafft" in page  # the built-in page, in the operator's frame

    assert signup(client, "anna@example.org", locale="de").status_code == 202
    deliver(app)
    proof = client.get("/v1/contacts/proof?email=anna@example.org&list=newsletter",
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Accept": "text/html"})
    html = proof.get_data(as_text=True)
    assert proof.status_code == 200 and "Unser Kopf" not in html
    assert '<html lang="de">' in html and '<meta name="robots" content="noindex, nofollow">' in html
    assert '<th scope="row">Prüfung des Protokolls</th>' in html
    assert ("<title>Nachweis der Einwilligung (Double-Opt-In) · Example Newsletter · "
            "anna@example.org</title>") in html
    app.extensions["optin.mail_backend"].close()


def test_template_dir_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="OPTIN_TEMPLATE_DIR"):
        create_app(make_config(tmp_path, OPTIN_TEMPLATE_DIR=str(tmp_path / "missing")))


# --- the expired link ---------------------------------------------------------------------


def test_expired_link_offers_a_fresh_mail(app, client, newsletter, mailbox, monkeypatch):
    assert signup(client, "late@example.org", locale="en").status_code == 202
    deliver(app)
    real_timestamp = TimestampSigner.get_timestamp
    # Links made now look 100 hours old (the default validity is 72 hours).
    monkeypatch.setattr(TimestampSigner, "get_timestamp",
                        lambda self: real_timestamp(self) - 100 * 3600)
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        sub.last_mail_requested_at = sub.created_at.replace(year=2000)  # past the resend throttle
        db.session.commit()
        from optin.delivery.notifications import confirm_url

        old_link = confirm_url(sub)
    monkeypatch.undo()
    path = old_link.removeprefix("http://newsletter.test")

    page = client.get(path)
    html = page.get_data(as_text=True)
    assert page.status_code == 410
    assert "This link has expired" in html
    resend = re.search(r'<form method="post" action="([^"]+)"', html)
    assert resend is not None
    assert "Send me a new confirmation link" in html
    # Confirming through the expired link does nothing.
    assert client.post(path).status_code == 410

    done = client.post(resend.group(1), follow_redirects=True)
    assert done.status_code == 200
    assert "Please check your inbox" in done.get_data(as_text=True)
    deliver(app)
    fresh = links(mailbox.to("late@example.org")[-1])["confirm"]
    assert fresh != path
    assert client.get(fresh).status_code == 200


BARE_E_MAIL = re.compile(r'(?<!<span class="nobr">)(?<!white-space:nowrap;">)E-Mail')


def _running_text(html: str) -> str:
    """The paragraphs and quotes of a page or mail, where a line may break."""
    return "\n".join(re.findall(r"<(?:p|blockquote)\b.*?</(?:p|blockquote)>", html, re.S))


def test_german_pages_and_mails_never_break_e_mail_after_its_hyphen(client, signed_up, mailbox):
    """ "E-" alone at a line's end (the phone's confirm page did it, in the consent text and
    in "direkt aus der E-/Mail"): every "E-Mail" of running text is kept together."""
    confirm = signed_up("de@example.org", locale="de")
    pages = [client.get(confirm), client.get("/thanks?list=newsletter&locale=de"),
             client.get("/unsubscribe/not-a-token", headers={"Accept-Language": "de"})]
    [mail] = mailbox.to("de@example.org")
    html_part = mail.get_body(preferencelist=("html",)).get_content()
    for text in [page.get_data(as_text=True) for page in pages] + [html_part]:
        running = _running_text(text)
        assert "E-Mail" in running
        assert not BARE_E_MAIL.search(running), BARE_E_MAIL.search(running).string[
            max(0, BARE_E_MAIL.search(running).start() - 80):][:160]
    # The consent text is shown as stored: the span changes no character a reader sees.
    assert '<span class="nobr">E-Mail</span>' in pages[0].get_data(as_text=True)
