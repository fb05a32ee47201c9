"""Settings: defaults, validation with one clear line, development conveniences."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from optin.config import SETTINGS, ConfigError, Settings


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
])
def test_bad_values_are_named(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        parse(tmp_path, **env)


def test_postgres_urls_use_psycopg3(tmp_path):
    settings = parse(tmp_path, OPTIN_DATABASE_URL="postgresql://u@db/optin",
                     OPTIN_SECRET_KEY="s" * 32)
    assert settings.database_url == "postgresql+psycopg://u@db/optin"
    assert not settings.development


def test_admin_tokens_are_named(tmp_path):
    settings = parse(tmp_path, OPTIN_ADMIN_TOKENS="alice:" + "a" * 20 + ", " + "b" * 20)
    assert settings.admin_tokens == {"a" * 20: "alice", "b" * 20: "token2"}
    assert "a" * 20 not in repr(settings)


def test_every_setting_is_documented_in_the_readme():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert missing == []


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
