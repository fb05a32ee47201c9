"""The development demo: landing page at / and the mail folder at /dev/mail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..conftest import build_app, deliver


@pytest.fixture
def dev_app(tmp_path: Path):
    """A development app as `optin serve` runs it: file mail, demo routes on."""
    app = build_app({
        "OPTIN_ENV": "development",
        "OPTIN_INSTANCE_PATH": str(tmp_path / "instance"),
        "OPTIN_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "OPTIN_BASE_URL": "http://localhost",
    })
    yield app
    from optin.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_demo_routes_do_not_exist_in_production(client):
    for path in ("/", "/dev/mail", "/dev/mail/x.eml/html"):
        assert client.get(path).status_code == 404, path


def test_demo_page_shows_the_embedded_form(dev_app):
    client = dev_app.test_client()
    page = client.get("/?lang=en")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<form class="optin-form" action="http://localhost/v1/subscriptions"' in html
    assert '<script src="http://localhost/static/embed.js" defer></script>' in html
    assert 'href="/dev/mail?lang=en"' in html
    assert str(dev_app.instance_path) in html  # where the mail files are
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "Bleiben Sie auf dem Laufenden" in client.get("/?lang=de").get_data(as_text=True)


@pytest.mark.parametrize(("lang", "false_claims"), [
    ("de", ["Keine Weitergabe", "mit einem Klick abbestellbar"]),
    ("en", ["never pass your address", "unsubscribe with one click"]),
])
def test_the_demo_page_claims_nothing_untrue(dev_app, lang, false_claims):
    """Contacts go to ActiveCampaign once it is configured, and the mail's unsubscribe link
    opens a page with a button: a company copying this page must not copy false promises."""
    html = dev_app.test_client().get(f"/?lang={lang}").get_data(as_text=True)
    for claim in false_claims:
        assert claim not in html
    assert ("Datenschutzerklärung" if lang == "de" else "privacy policy") in html


def test_mail_folder_lists_mails_with_their_links(dev_app):
    client = dev_app.test_client()
    assert "No mail yet" in client.get("/dev/mail?lang=en").get_data(as_text=True)
    client.get("/")  # creates the demo list
    response = client.post("/v1/subscriptions", data={
        "email": "anna@example.org", "list": "newsletter", "locale": "en",
        "consent_text_version": "1",
    }, headers={"Accept": "text/html"})
    assert response.status_code == 303
    deliver(dev_app)

    index = client.get("/dev/mail?lang=en").get_data(as_text=True)
    assert "Please confirm your subscription to “Newsletter”" in index
    confirm = re.search(r'<a class="button" href="(http://localhost/confirm/[^"]+)">'
                        r"Open the confirmation link</a>", index)
    assert confirm is not None
    name = re.search(r'href="/dev/mail/([^/"]+)/html"', index).group(1)

    html_part = client.get(f"/dev/mail/{name}/html")
    assert html_part.status_code == 200
    assert confirm.group(1) in html_part.get_data(as_text=True)
    assert "script-src" not in html_part.headers["Content-Security-Policy"]
    assert "style-src 'unsafe-inline'" in html_part.headers["Content-Security-Policy"]

    text_part = client.get(f"/dev/mail/{name}/text")
    assert text_part.mimetype == "text/plain"
    assert "Subject: Please confirm your subscription to “Newsletter”" in text_part.get_data(as_text=True)


@pytest.mark.parametrize("name", ["..%2Fdev.db", "missing.eml", "..%2F..%2Fsecret_key"])
def test_mail_viewer_reads_only_the_mail_folder(dev_app, name):
    client = dev_app.test_client()
    assert client.get(f"/dev/mail/{name}/text").status_code == 404
