"""``optin mail last``: the last mail the file backend wrote, decoded, through the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from optin.consent import lists
from optin.extensions import db

from ..conftest import build_app, deliver, make_config, signup

# A base URL long enough that the confirm link does not fit in a quoted-printable line (76).
BASE = "http://newsletter-with-a-rather-long-host-name.test:8765"


@pytest.fixture
def file_app(tmp_path: Path):  # noqa: ANN201
    """The app with mail written to a folder (the development default)."""
    app = build_app(make_config(tmp_path, OPTIN_MAIL_URL=(tmp_path / "mail").as_uri(),
                                OPTIN_BASE_URL=BASE))
    with app.app_context():
        mailing_list = lists.create_list("newsletter", "Newsletter", default_locale="en")
        for locale, text in lists.DEMO_TEXTS.items():
            lists.add_consent_text(mailing_list, locale, text)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_links_are_whole_where_the_raw_file_cuts_them(file_app, tmp_path):
    client = file_app.test_client()
    assert signup(client, "anna@example.org").status_code == 202
    deliver(file_app)
    [raw] = (tmp_path / "mail").glob("*.eml")
    # What the README's old grep found: the link broken by a soft line break ("=" + newline).
    cut = re.search(rf"{re.escape(BASE)}/confirm/[^ \n]*", raw.read_text()).group()
    assert cut.endswith("=")

    result = file_app.test_cli_runner().invoke(args=["mail", "last", "--links"])
    assert result.exit_code == 0, result.output
    [link] = result.output.splitlines()
    assert link.startswith(f"{BASE}/confirm/") and len(link) > len(cut)
    page = client.get(link.removeprefix(BASE))
    assert page.status_code == 200 and "Confirm" in page.get_data(as_text=True)
    assert client.post(link.removeprefix(BASE)).status_code == 303


def test_last_mail_shows_headers_and_the_decoded_text(file_app):
    client = file_app.test_client()
    signup(client, "anna@example.org", locale="de", first_name="Zoë")
    deliver(file_app)
    result = file_app.test_cli_runner().invoke(args=["mail", "last"])
    assert result.exit_code == 0, result.output
    head, _, body = result.output.partition("\n\n")
    assert "To: Zoë <anna@example.org>" in head and "Subject: " in head
    assert "Message-ID: <" in head
    assert "Guten Tag Zoë," in body and "=C3" not in body  # decoded, not quoted-printable
    assert f"{BASE}/confirm/" in body


def test_to_picks_the_last_mail_to_that_address(file_app):
    client = file_app.test_client()
    runner = file_app.test_cli_runner()
    signup(client, "anna@example.org")
    deliver(file_app)
    anna = runner.invoke(args=["mail", "last", "--links"]).output
    signup(client, "ben@example.org")
    deliver(file_app)
    assert runner.invoke(args=["mail", "last", "--links"]).output != anna
    assert runner.invoke(args=["mail", "last", "--to", "Anna@Example.org", "--links"]).output == anna
    to_ben = runner.invoke(args=["mail", "last", "--to", "ben@example.org"]).output
    assert "To: ben@example.org" in to_ben


def test_no_mail_is_said_plainly(file_app):
    runner = file_app.test_cli_runner()
    empty = runner.invoke(args=["mail", "last"])
    assert empty.exit_code == 1 and "no mail in " in empty.output
    signup(file_app.test_client(), "anna@example.org")
    deliver(file_app)
    nobody = runner.invoke(args=["mail", "last", "--to", "nobody@example.org"])
    assert nobody.exit_code == 1 and "no mail to that address" in nobody.output
    assert "nobody@example.org" not in nobody.output


def test_with_smtp_there_is_no_folder_to_read(runner):
    smtp = runner.invoke(args=["mail", "last"])  # the suite's app sends by SMTP
    assert smtp.exit_code == 1 and "mail goes out by SMTP" in smtp.output
