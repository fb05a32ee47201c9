"""Lists through the CLI: per-list sender and reply-to, and changing a list."""

from __future__ import annotations

import json

from optin import create_app
from optin.consent import lists
from optin.extensions import db

from ..conftest import deliver, signup


def _show(runner, slug: str = "newsletter") -> dict:
    result = runner.invoke(args=["lists", "show", slug, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_mail_carries_the_lists_sender_and_reply_to(app, client, runner, mailbox):
    result = runner.invoke(args=[
        "lists", "create", "newsletter", "--name", "Weekly", "--locale", "en",
        "--sender", "Müller & Söhne News <news@example.com>", "--reply-to", "team@example.com",
    ])
    assert result.exit_code == 0, result.output
    assert runner.invoke(args=["consent-texts", "add", "newsletter", "--locale", "en",
                               "--text", "Yes, send me the weekly."]).exit_code == 0

    assert signup(client, "anna@example.org").status_code == 202
    deliver(app)
    [mail] = mailbox.to("anna@example.org")
    assert mail["From"].addresses[0].display_name == "Müller & Söhne News"
    assert mail["From"].addresses[0].addr_spec == "news@example.com"
    assert str(mail["Reply-To"]) == "team@example.com"
    assert mailbox.envelopes[-1][0] == "news@example.com"  # the SMTP envelope too
    assert str(mail["Message-ID"]).endswith("@example.com>")  # the sender's domain, no stray ">"


def test_lists_without_a_sender_use_the_default(app, client, newsletter, mailbox):
    assert signup(client, "anna@example.org").status_code == 202
    deliver(app)
    [mail] = mailbox.to("anna@example.org")
    assert str(mail["From"]) == "Newsletter <news@example.com>"  # OPTIN_MAIL_FROM, named by the brand
    assert mail["Reply-To"] is None


def test_update_changes_only_what_is_given(app, client, runner, newsletter, mailbox):
    result = runner.invoke(args=["lists", "update", "newsletter", "--sender",
                                 "Example News <news@example.com>", "--reply-to",
                                 "help@example.com", "--goodbye", "--origin",
                                 "https://landing.example.com"])
    assert result.exit_code == 0, result.output
    info = _show(runner)
    assert info["sender"] == "Example News <news@example.com>"
    assert info["reply_to"] == "help@example.com"
    assert info["send_goodbye"] is True
    assert info["origins"] == ["https://landing.example.com"]
    assert info["name"] == "Example Newsletter"  # untouched
    assert info["redirect_urls"] == ["https://www.example.com/danke"]
    assert info["send_welcome"] is True

    assert signup(client, "anna@example.org").status_code == 202
    deliver(app)
    assert str(mailbox.to("anna@example.org")[-1]["Reply-To"]) == "help@example.com"

    # An empty value goes back to the default.
    assert runner.invoke(args=["lists", "update", "newsletter", "--reply-to", ""]).exit_code == 0
    assert _show(runner)["reply_to"] is None


def test_update_refuses_bad_values_and_changes_nothing(runner, newsletter):
    for args, message in (
        (["--sender", "not an address"], "sender must be one address"),
        (["--reply-to", "a@example.com, b@example.com"], "reply-to must be one address"),
        (["--sender", "x@example.com", "--origin", "https://x.example.com/page"], "origin"),
        (["--privacy-policy-url", "ftp://example.com"], "privacy policy URL"),
    ):
        result = runner.invoke(args=["lists", "update", "newsletter", *args])
        assert result.exit_code == 1, args
        assert message in result.output
    info = _show(runner)
    assert info["sender"] is None and info["origins"] == ["https://www.example.com"]

    nothing = runner.invoke(args=["lists", "update", "newsletter"])
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output
    missing = runner.invoke(args=["lists", "update", "nope", "--name", "X"])
    assert missing.exit_code == 1 and "no list 'nope'" in missing.output


def test_create_refuses_a_bad_sender(app, runner):
    result = runner.invoke(args=["lists", "create", "weekly", "--name", "Weekly",
                                 "--sender", "news@example.com\r\nBcc: x@example.com"])
    assert result.exit_code == 1
    with app.app_context():
        assert lists.get_list("weekly") is None


def test_each_app_keeps_its_own_list_snapshots(app, app_config, newsletter):
    """A change reaches the app that made it at once, another app (another host) from the
    database within SNAPSHOT_TTL: the apps never share their cache."""
    other = create_app(dict(app_config))
    try:
        with app.app_context():
            assert lists.list_snapshot("newsletter").name == "Example Newsletter"
        with other.app_context():
            lists.update_list(lists.get_list("newsletter"), name="Renamed")
            assert lists.list_snapshot("newsletter").name == "Renamed"
        with app.app_context():
            assert lists.list_snapshot("newsletter").name == "Example Newsletter"
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
