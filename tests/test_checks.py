"""``optin check`` through the CLI, against the real outside parts the suite runs: an SMTP
relay that wants STARTTLS and a login (aiosmtpd), the ActiveCampaign stand-in, Redis.

Each failure mode fails exactly its own row and the exit code, and no run shows a secret.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from click.testing import Result

from optin import create_app
from optin.checks import redact
from optin.consent import lists
from optin.extensions import db

from .conftest import PG_URL, SecureSMTP, _reset_postgres, build_app, free_port, make_config, with_fake_ac
from .fake_activecampaign import FakeActiveCampaign

SECRET_KEY = "check-secret-key-3b9f1c6e2a7d4e8f"
HASH_KEY = "check-hash-key-8c2e5a1f9d3b7e6c40"
ADMIN_TOKEN = "check-admin-token-5d1a9e3c7b2f8e4a"
WEBHOOK_SECRET = "check-webhook-secret-2f7c9a1e5b3d8c6e"
REDIS_URL = "redis://127.0.0.1:6379/9"  # only PINGed
ROW = re.compile(r"^(?P<name>\S.*?)\s{2,}(?P<status>ok|FAIL|skip)\s{2,}(?P<detail>.*)$")


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def production(tmp_path: Path, secure_smtp_server: SecureSMTP,
               fake_ac: FakeActiveCampaign) -> dict[str, str]:
    """A production configuration whose every outside part is there and right."""
    config = make_config(
        tmp_path, OPTIN_SECRET_KEY=SECRET_KEY, OPTIN_HASH_KEY=HASH_KEY,
        OPTIN_BASE_URL="https://optin.example.com", OPTIN_MAIL_URL=secure_smtp_server.url(),
        OPTIN_ADMIN_TOKENS=f"ops:{ADMIN_TOKEN}", OPTIN_AC_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    return with_fake_ac(config, fake_ac)


def run_check(config: dict[str, str], *args: str, migrate: bool = True,
              ac_list_id: int | None = 1) -> Result:
    """``optin check ARGS`` on a database with the ``newsletter`` list (mapped to
    ``ac_list_id``), or (``migrate=False``) on one no migration has touched."""
    if migrate:
        app = build_app(config)
        with app.app_context():
            lists.create_list("newsletter", "Newsletter", ac_list_id=ac_list_id)
    else:
        if PG_URL and config["OPTIN_DATABASE_URL"] == PG_URL:
            _reset_postgres(PG_URL)
        app = create_app(config)
    try:
        return app.test_cli_runner().invoke(args=["check", *args])
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def rows(output: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in output.splitlines()[1:]:
        match = ROW.match(line)
        if match:
            found[match["name"]] = (match["status"], match["detail"])
    return found


def assert_no_secret(output: str, *more: str) -> None:
    secrets = [SECRET_KEY, HASH_KEY, ADMIN_TOKEN, WEBHOOK_SECRET, SecureSMTP.password,
               quote(SecureSMTP.password, safe=""), FakeActiveCampaign(lists={}).api_key, *more]
    for secret in secrets:
        assert secret not in output, f"a secret shows in:\n{output}"


def test_everything_configured_passes(production, secure_smtp_server):
    secure_smtp_server.server.mailbox.clear()
    result = run_check(production)
    assert result.exit_code == 0, result.output
    found = rows(result.output)
    assert {name: status for name, (status, _) in found.items()} == {
        "database": "ok", "database migrations": "ok", "smtp connect": "ok",
        "smtp starttls": "ok", "smtp login": "ok", "smtp send": "skip",
        "activecampaign": "ok", "activecampaign list newsletter": "ok", "redis": "skip",
        "base url": "ok", "secrets": "ok", "admin tokens": "ok",
    }
    assert "Newsletter" in found["activecampaign list newsletter"][1]
    assert "at head" in found["database migrations"][1]
    assert result.output.rstrip().endswith("all 10 checks passed (2 skipped)")
    assert secure_smtp_server.server.mailbox.messages == []  # sends nothing by default
    assert_no_secret(result.output)


def test_send_to_sends_one_test_mail(production, secure_smtp_server):
    secure_smtp_server.server.mailbox.clear()
    result = run_check(production, "--send-to", "ops@example.org")
    assert result.exit_code == 0, result.output
    assert rows(result.output)["smtp send"][0] == "ok"
    [mail] = secure_smtp_server.server.mailbox.to("ops@example.org")
    assert "optin check" in str(mail["Subject"])
    assert_no_secret(result.output)


@pytest.mark.skipif(not _redis_up(), reason="no Redis at 127.0.0.1:6379")
def test_redis_reachable(production):
    production["OPTIN_RATELIMIT_STORAGE_URL"] = REDIS_URL
    result = run_check(production)
    assert result.exit_code == 0, result.output
    assert rows(result.output)["redis"] == ("ok", "127.0.0.1 answers")


def _closed_port_url(relay: SecureSMTP) -> str:
    return relay.url(port=free_port())


# (what is wrong, how the configuration says it, the one row that fails, what it says)
FAILURES: list[tuple[str, dict[str, Any], str, str]] = [
    ("smtp down", {"OPTIN_MAIL_URL": _closed_port_url}, "smtp connect", "ConnectionRefusedError"),
    ("bad login", {"OPTIN_MAIL_URL": lambda relay: relay.url(password="wrong-smtp-pass-77")},
     "smtp login", "535"),
    ("ac key refused", {"OPTIN_AC_API_KEY": "wrong-ac-key-0123456789abcdef"},
     "activecampaign", "OPTIN_AC_API_KEY refused (403)"),
    ("unknown ac list id", {"ac_list_id": 99}, "activecampaign list newsletter",
     "ActiveCampaign has no list 99"),
    ("redis down", {"OPTIN_RATELIMIT_STORAGE_URL": "redis://:redis-pass-4f8a2c@127.0.0.1:{port}/0"},
     "redis", "does not answer PING"),
    ("http base url", {"OPTIN_BASE_URL": "http://optin.example.com"}, "base url",
     "must be https:// in production"),
    ("short secret", {"OPTIN_SECRET_KEY": "short-but-valid-key-1"}, "secrets",
     "shorter than 32 characters: OPTIN_SECRET_KEY "),
    ("short admin token", {"OPTIN_ADMIN_TOKENS": "ops:sixteen-chars-tok"}, "secrets",
     "OPTIN_ADMIN_TOKENS entry 'ops'"),
    ("no admin tokens", {"OPTIN_ADMIN_TOKENS": ""}, "admin tokens", "OPTIN_ADMIN_TOKENS is unset"),
    ("migrations behind", {"migrate": False}, "database migrations",
     "schema at no migration, code expects"),
    ("database unreachable", {"migrate": False, "OPTIN_DATABASE_URL":
                              "postgresql+psycopg://optin:db-pass-9c3e1a@127.0.0.1:{port}/optin"
                              "?connect_timeout=2"},
     "database", "does not answer: OperationalError"),
]


@pytest.mark.parametrize(("changes", "row", "says"), [f[1:] for f in FAILURES],
                         ids=[f[0] for f in FAILURES])
def test_each_failure_fails_its_row_and_the_exit_code(production, secure_smtp_server, changes,
                                                      row, says):
    options: dict[str, Any] = {}
    shown_secrets = ["wrong-smtp-pass-77", "wrong-ac-key-0123456789abcdef", "redis-pass-4f8a2c",
                     "db-pass-9c3e1a", "short-but-valid-key-1", "sixteen-chars-tok"]
    for name, value in changes.items():
        if name in {"migrate", "ac_list_id"}:
            options[name] = value
        elif callable(value):
            production[name] = value(secure_smtp_server)
        else:
            production[name] = value.format(port=free_port())
    result = run_check(production, **options)
    assert result.exit_code == 1, result.output
    found = rows(result.output)
    assert [name for name, (status, _) in found.items() if status == "FAIL"] == [row], result.output
    assert says in found[row][1], result.output
    assert re.search(r"^1 of \d+ checks failed$", result.output, re.MULTILINE)
    assert_no_secret(result.output, *shown_secrets)


def test_steps_after_a_failure_are_skipped_not_tried(production, secure_smtp_server):
    production["OPTIN_MAIL_URL"] = _closed_port_url(secure_smtp_server)
    found = rows(run_check(production, "--send-to", "ops@example.org").output)
    assert [found[n][0] for n in ("smtp starttls", "smtp login", "smtp send")] == ["skip"] * 3


def test_a_mail_folder_fails_in_production(production):
    production["OPTIN_MAIL_URL"] = (Path(production["OPTIN_INSTANCE_PATH"]) / "mail").as_uri()
    result = run_check(production)
    assert result.exit_code == 1
    assert rows(result.output)["mail"][0] == "FAIL"


def test_redact_blanks_every_secret_whole():
    text = redact("login as u:pa%3Ass-word-long / pa:ss-word-long failed, key k-123456-longer",
                  ["pa:ss-word-long", "pa%3Ass-word-long", "k-123456", "k-123456-longer", "abc"])
    assert text == "login as u:[redacted] / [redacted] failed, key [redacted]"
