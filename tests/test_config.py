"""Settings: defaults, validation with one clear line, development conveniences."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from optin.config import (
    DEVELOPMENT_OPERATOR,
    ConfigError,
    MailFolder,
    RedisKind,
    Settings,
    SharedStorage,
    SMTPServer,
    unknown_variables,
)
from optin.config.table import markdown_table

CONTROLLER = {"OPTIN_CONTROLLER_NAME": "Example GmbH",
              "OPTIN_CONTROLLER_ADDRESS": "Musterstraße 1; 10115 Berlin"}


def parse(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env(env, tmp_path)


def test_embedded_defaults_are_development(tmp_path):
    settings = parse(tmp_path)
    assert settings.development
    assert settings.database_url == f"sqlite:///{tmp_path / 'optin.db'}"
    assert settings.mail_url == (tmp_path / "mail").as_uri()
    assert settings.ac_dry_run
    assert settings.confirm_ttl_hours == 72
    # The generated secret is kept, so links survive a restart.
    assert parse(tmp_path).secret_key == settings.secret_key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_production_requires_a_secret_key(tmp_path):
    with pytest.raises(ConfigError, match="OPTIN_SECRET_KEY is required"):
        parse(tmp_path, OPTIN_DATABASE_URL="postgresql://db/optin")


@pytest.mark.parametrize(("env", "message"), [
    ({"OPTIN_CONFIRM_TTL_HOURS": "three"}, "OPTIN_CONFIRM_TTL_HOURS must be a whole number"),
    ({"OPTIN_CONFIRM_TTL_HOURS": "0"}, "OPTIN_CONFIRM_TTL_HOURS must be at least 1"),
    ({"OPTIN_MAIL_URL": "http://mail"}, "OPTIN_MAIL_URL must start with"),
    ({"OPTIN_BASE_URL": "newsletter.example"}, "OPTIN_BASE_URL must be an http"),
    ({"OPTIN_AC_URL": "https://x.api-us1.com"}, "OPTIN_AC_API_KEY is required"),
    ({"OPTIN_ADMIN_TOKENS": "short"}, "shorter than 16"),
    ({"OPTIN_ENV": "staging"}, "OPTIN_ENV must be"),
    ({"OPTIN_SECRET_KEY": "tooshort"}, "at least 16"),
    ({"OPTIN_BRAND_COLOR": "red; }"}, "OPTIN_BRAND_COLOR"),
    # Dates past year 9999: every withdrawal (or signup, or link) failed in its transaction.
    ({"OPTIN_PROOF_RETENTION_YEARS": "9000"}, "OPTIN_PROOF_RETENTION_YEARS must be at most 100"),
    ({"OPTIN_PENDING_RETENTION_DAYS": "3000000"}, "OPTIN_PENDING_RETENTION_DAYS must be at most"),
    ({"OPTIN_CONFIRM_TTL_HOURS": "99999999999"}, "OPTIN_CONFIRM_TTL_HOURS must be at most"),
])
def test_bad_values_are_named(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        parse(tmp_path, **env)


@pytest.mark.parametrize("missing", ["OPTIN_CONTROLLER_NAME", "OPTIN_CONTROLLER_ADDRESS"])
def test_production_requires_the_controllers_legal_name_and_address(tmp_path, missing):
    env = {**CONTROLLER, missing: "  "}
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, OPTIN_DATABASE_URL="postgresql://db/optin", OPTIN_SECRET_KEY="s" * 32, **env)
    assert str(caught.value) == (f"{missing} is required in production (the proof of consent "
                                 "names the controller: legal name and postal address)")
    assert parse(tmp_path, **env).development  # development needs neither


def test_the_controllers_address_lines_and_the_proof_time_zone(tmp_path):
    settings = parse(tmp_path, OPTIN_CONTROLLER_ADDRESS="Musterstraße 1\\n10115 Berlin; Deutschland")
    assert settings.controller_address_lines == ["Musterstraße 1", "10115 Berlin", "Deutschland"]
    assert settings.proof_timezone == "Europe/Berlin"
    with pytest.raises(ConfigError, match="OPTIN_PROOF_TIMEZONE must be a time zone name"):
        parse(tmp_path, OPTIN_PROOF_TIMEZONE="Mars/Olympus")


def test_postgres_urls_use_psycopg3(tmp_path):
    settings = parse(tmp_path, OPTIN_DATABASE_URL="postgresql://u@db/optin",
                     OPTIN_SECRET_KEY="s" * 32, **CONTROLLER)
    assert settings.database_url == "postgresql+psycopg://u@db/optin"
    assert not settings.development


def test_admin_tokens_are_named(tmp_path):
    settings = parse(tmp_path, OPTIN_ADMIN_TOKENS="alice:" + "a" * 20 + ", " + "b" * 20)
    assert settings.admin_tokens == {"a" * 20: "alice", "b" * 20: "token2"}
    assert "a" * 20 not in repr(settings)


def test_the_readme_table_is_the_declared_one():
    """The README's table is what ``python -m optin.config`` prints, every variable in it."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = markdown_table()
    assert table in readme
    rows = table.splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)
    assert "| `OPTIN_CONFIRM_TTL_HOURS` | validity of a confirmation link | `72` |" in rows
    assert ("| `OPTIN_EMAIL_CHECK_DELIVERABILITY` | 1 = look up the address's domain in DNS at "
            "signup | `0` |") in rows


def test_python_m_optin_config_prints_the_table_without_a_warning():
    result = subprocess.run([sys.executable, "-W", "default", "-m", "optin.config"],
                            capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1],
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == markdown_table()


def test_cli_reports_a_config_error_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIN_")}
    env.update(OPTIN_DATABASE_URL=f"sqlite:///{tmp_path}/x.db", OPTIN_INSTANCE_PATH=str(tmp_path),
               PYTHONPATH=os.getcwd())
    result = subprocess.run([sys.executable, "-m", "optin", "lists", "list"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "optin: configuration error: OPTIN_SECRET_KEY is required in production "
        "(it signs the links in mails)"
    )


def test_an_empty_variable_counts_as_unset(tmp_path):
    settings = parse(tmp_path, OPTIN_TRUSTED_PROXIES="", OPTIN_MAIL_FROM="", OPTIN_AC_URL="")
    assert (settings.trusted_proxies, settings.mail_from) == (0, "newsletter@localhost")
    assert settings.ac_dry_run


@pytest.mark.parametrize(("url", "message"), [
    ("smtp://u:hunter2@mail.example:587?timeout=abc",
     "OPTIN_MAIL_URL option timeout must be a number of seconds above 0, got 'abc'"),
    ("smtp://u:hunter2@mail.example:587?timeout=0",
     "OPTIN_MAIL_URL option timeout must be a number of seconds above 0, got '0'"),
    ("smtp://u:hunter2@mail.example?starttls=maybe",
     "OPTIN_MAIL_URL option starttls must be 0 or 1, got 'maybe'"),
    ("smtp://u:hunter2@mail.example?tls=1", "OPTIN_MAIL_URL has an unknown option 'tls'"),
    ("smtp://u:hunter2@mail.example?starttls=1&starttls=0",
     "OPTIN_MAIL_URL names the option starttls twice"),
    ("smtp://u:hunter2@mail.example:abc", "OPTIN_MAIL_URL has a port that is not a number"),
    ("smtps://u:hunter2@mail.example?cafile=/no/such/ca.pem",
     "OPTIN_MAIL_URL option cafile must be an existing certificate file"),
    ("file://", "OPTIN_MAIL_URL file:// must name a folder"),
])
def test_mail_url_options_are_checked_at_start_up(tmp_path, url, message):
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, OPTIN_MAIL_URL=url)
    assert str(caught.value).startswith(message)
    assert "hunter2" not in str(caught.value)


def test_the_mail_url_is_parsed_once_for_the_mailer(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = parse(tmp_path, OPTIN_MAIL_URL=f"smtp://u%40x:p%3Ass@mail.example:587"
                                              f"?starttls=yes&timeout=2.5&cafile={ca}")
    assert settings.mail == SMTPServer("mail.example", 587, username="u@x", password="p:ss",
                                       starttls=True, timeout=2.5, cafile=str(ca))
    assert "p:ss" not in repr(settings.mail) and "p%3Ass" not in repr(settings)
    assert parse(tmp_path, OPTIN_MAIL_URL="smtps://mail.example").mail == SMTPServer(
        "mail.example", 465, implicit_tls=True)
    assert parse(tmp_path).mail == MailFolder(tmp_path / "mail")


@pytest.mark.parametrize(("url", "expected"), [
    ("memory://", None),
    ("redis://redis.example:6379/2", SharedStorage(RedisKind.SERVER, "redis://redis.example:6379/2")),
    ("rediss://:pw@redis.example:6380/0", SharedStorage(RedisKind.SERVER, "rediss://:pw@redis.example:6380/0")),
    ("redis+unix:///run/redis.sock?db=3", SharedStorage(RedisKind.SERVER, "unix:///run/redis.sock?db=3")),
    ("redis+sentinel://user:pw@s1:26379,s2:26380/mymaster",
     SharedStorage(RedisKind.SENTINEL, nodes=(("s1", 26379), ("s2", 26380)),
                   service_name="mymaster", username="user", password="pw")),
    ("redis+cluster://:pw@c1:7000, c2:7001",
     SharedStorage(RedisKind.CLUSTER, nodes=(("c1", 7000), ("c2", 7001)), password="pw")),
])
def test_the_rate_limit_storage_is_parsed_in_config(tmp_path, url, expected):
    assert parse(tmp_path, OPTIN_RATELIMIT_STORAGE_URL=url).shared_storage == expected


@pytest.mark.parametrize(("url", "message"), [
    ("redis+sentinel://:hunter2@s1:26379", "must name the service after the sentinels"),
    ("redis+sentinel://:hunter2@s1:26379/a/b", "must name the service after the sentinels"),
    ("redis+cluster://:hunter2@c1", "redis+cluster:// hosts must look like host:port, got 'c1'"),
    ("redis+cluster://:hunter2@", "redis+cluster:// must name at least one host:port"),
    ("redis+unix://", "redis+unix:// must name the socket"),
    ("memcached://cache:11211", "must start with memory:// or redis://"),
])
def test_a_storage_url_the_throttle_could_not_use_is_refused(tmp_path, url, message):
    with pytest.raises(ConfigError, match="OPTIN_RATELIMIT_STORAGE_URL") as caught:
        parse(tmp_path, OPTIN_RATELIMIT_STORAGE_URL=url)
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(("env", "message"), [
    ({"OPTIN_AC_RATE_LIMIT": "0"}, "OPTIN_AC_RATE_LIMIT must be a number above 0, got '0'"),
    ({"OPTIN_AC_RATE_LIMIT": "inf"}, "OPTIN_AC_RATE_LIMIT must be a finite number"),
    ({"OPTIN_WORKER_POLL_SECONDS": "soon"}, "OPTIN_WORKER_POLL_SECONDS must be a number, got 'soon'"),
    ({"OPTIN_EMAIL_CHECK_DELIVERABILITY": "perhaps"},
     "OPTIN_EMAIL_CHECK_DELIVERABILITY must be 0 or 1, got 'perhaps'"),
    ({"OPTIN_LOG_LEVEL": "loud"}, "OPTIN_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'LOUD'"),
    ({"OPTIN_LOG_FORMAT": "xml"}, "OPTIN_LOG_FORMAT must be json or text, got 'xml'"),
    ({"OPTIN_AC_FIELD_MAP": "company"}, "OPTIN_AC_FIELD_MAP entry 'company' must look like"),
    ({"OPTIN_AC_FIELD_MAP": "a:1,a:2"}, "OPTIN_AC_FIELD_MAP names 'a' twice"),
    ({"OPTIN_AC_URL": "ftp://x", "OPTIN_AC_API_KEY": "k"}, "OPTIN_AC_URL must look like https://"),
    ({"OPTIN_TEMPLATE_DIR": "/no/such/dir"}, "OPTIN_TEMPLATE_DIR must be an existing folder"),
    ({"OPTIN_BRAND_BACKGROUND_COLOR": "white"}, "OPTIN_BRAND_BACKGROUND_COLOR must be a hex colour"),
])
def test_more_bad_values_are_named(tmp_path, env, message):
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, **env)
    assert str(caught.value).startswith(message)


def test_a_secret_is_never_repeated_in_an_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, OPTIN_SECRET_KEY="hunter2")
    assert str(caught.value) == "OPTIN_SECRET_KEY must be at least 16 characters long"


def test_unknown_variables_are_the_undeclared_ones():
    assert unknown_variables({"OPTIN_CONFIRM_TTL_HOUR": "1", "OPTIN_BASE_URL": "x", "HOME": "/"}) == [
        "OPTIN_CONFIRM_TTL_HOUR"]


def test_development_generates_one_operator_token(tmp_path):
    settings = parse(tmp_path)
    [(token, name)] = settings.admin_tokens.items()
    assert name == DEVELOPMENT_OPERATOR and len(token) >= 32
    assert (tmp_path / "admin_token").read_text() == token
    assert (tmp_path / "admin_token").stat().st_mode & 0o077 == 0
    assert parse(tmp_path).admin_tokens == settings.admin_tokens  # kept across restarts
    configured = parse(tmp_path, OPTIN_ADMIN_TOKENS="ops:" + "o" * 20).admin_tokens
    assert configured == {"o" * 20: "ops"}


def test_production_generates_no_operator_token(tmp_path):
    settings = parse(tmp_path, OPTIN_DATABASE_URL="postgresql://db/optin", OPTIN_SECRET_KEY="s" * 32,
                     **CONTROLLER)
    assert settings.admin_tokens == {}
    assert not (tmp_path / "admin_token").exists()
