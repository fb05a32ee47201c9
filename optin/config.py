"""Every ``OPTIN_*`` setting, parsed and validated once at start-up.

Nothing else in the package reads the environment: the app factory builds one
:class:`Settings` and everything asks ``current_settings()`` (or receives it).
A wrong value stops the app with one line that names the variable.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from optin.brand import brand_from

PACKAGE_DIR = Path(__file__).resolve().parent


def _resource_dir(name: str) -> Path:
    """Top-level ``templates/`` and ``migrations/``: in the checkout next to the
    package, in an installed wheel inside it (see pyproject's force-include)."""
    packaged = PACKAGE_DIR / name
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / name


TEMPLATE_DIR = _resource_dir("templates")
MIGRATIONS_DIR = _resource_dir("migrations")


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """Documentation and default of one variable (the README table is built from these)."""

    name: str
    default: str | None
    help: str


# The documented variables, in the order the README lists them.
SETTINGS: tuple[Setting, ...] = (
    Setting("OPTIN_ENV", None,
            "`development` or `production`; default: development while OPTIN_DATABASE_URL is "
            "unset (the embedded SQLite), production otherwise"),
    Setting("OPTIN_DATABASE_URL", None, "SQLAlchemy URL; default: SQLite file in the instance folder"),
    Setting("OPTIN_SECRET_KEY", None,
            "signs links; required in production, generated once into the instance folder "
            "in development"),
    Setting("OPTIN_HASH_KEY", None,
            "key of the address hash kept for suppression; default: derived from "
            "OPTIN_SECRET_KEY (set it to rotate the secret key without losing suppression)"),
    Setting("OPTIN_BASE_URL", "http://localhost:8000", "public URL that links in mails point to"),
    Setting("OPTIN_MAIL_URL", None,
            "`smtp://user:pass@host:port` (`?starttls=1`), `smtps://…`, or `file:///dir`; "
            "default: file:// + instance folder /mail"),
    Setting("OPTIN_MAIL_FROM", "newsletter@localhost", "sender address"),
    Setting("OPTIN_AC_URL", None, "ActiveCampaign account API URL; unset = dry-run"),
    Setting("OPTIN_AC_API_KEY", None, "ActiveCampaign API key"),
    Setting("OPTIN_AC_WEBHOOK_SECRET", None,
            "shared secret ActiveCampaign webhooks carry; unset = webhooks refused"),
    Setting("OPTIN_AC_RATE_LIMIT", "4",
            "ActiveCampaign requests per second, all workers together (the account allows 5)"),
    Setting("OPTIN_AC_FIELD_MAP", None,
            "personal fields sent to ActiveCampaign custom fields, `name:field id,…` "
            "(e.g. `company:3,role:7`); unset = only address and names"),
    Setting("OPTIN_AC_RECONCILE_MINUTES", "60",
            "how often the worker compares ActiveCampaign's lists with the service; 0 = never"),
    Setting("OPTIN_AC_TIMEOUT_SECONDS", "10",
            "read timeout of one ActiveCampaign request"),
    Setting("OPTIN_ADMIN_TOKENS", None,
            "comma-separated bearer tokens for the operator API (`name:token` names one for "
            "the audit trail); unset = operator API refused"),
    Setting("OPTIN_TRUSTED_PROXIES", "0", "how many proxies' X-Forwarded-For hops to trust"),
    Setting("OPTIN_RATELIMIT_STORAGE_URL", "memory://",
            "where rate-limit counts live: `memory://` (one process) or `redis://host:port/db` "
            "(shared by every host and worker process; also `rediss://`, `redis+sentinel://`, "
            "`redis+cluster://`)"),
    Setting("OPTIN_RATELIMIT_SIGNUP", "10/minute;100/hour",
            "signups (`POST /v1/subscriptions`) per client IP (IPv6: per /64); `;` separates "
            "limits, e.g. `10/minute;100/hour`"),
    Setting("OPTIN_RATELIMIT_LINKS", "20/minute;200/hour",
            "requests per client IP to the confirm and unsubscribe links (page and button)"),
    Setting("OPTIN_RATELIMIT_WEBHOOK", "300/minute",
            "ActiveCampaign webhook posts per client IP (a refused one is caught up by "
            "`optin ac reconcile`)"),
    Setting("OPTIN_MAILS_PER_ADDRESS_PER_DAY", "3",
            "confirmation mails to one address in 24 hours, whatever the IP or list; signups "
            "beyond it are answered as usual and send no mail"),
    Setting("OPTIN_CONFIRM_TTL_HOURS", "72", "validity of a confirmation link"),
    Setting("OPTIN_RESEND_INTERVAL_MINUTES", "15",
            "a pending signup that signs up again gets at most one new mail per interval"),
    Setting("OPTIN_PENDING_RETENTION_DAYS", "14",
            "days after signup before an unconfirmed signup is minimized"),
    Setting("OPTIN_PROOF_RETENTION_YEARS", "3",
            "years after the end of the withdrawal year that proof is kept"),
    Setting("OPTIN_OUTBOX_MAX_ATTEMPTS", "12", "delivery attempts before an outbox row is dead"),
    Setting("OPTIN_OUTBOX_RETRY_HORIZON_HOURS", "48",
            "age after which a failing outbox row is dead even with attempts left"),
    Setting("OPTIN_WORKER_POLL_SECONDS", "1.0", "how long an idle worker sleeps between polls"),
    Setting("OPTIN_EMAIL_CHECK_DELIVERABILITY", "0",
            "1 = look up the address's domain in DNS at signup"),
    Setting("OPTIN_SMTPUTF8", "refuse",
            "addresses with non-ASCII characters before the @ (`jörg@example.org`) can only be "
            "mailed with SMTPUTF8: `refuse` them at signup (422), or accept them and mail them "
            "`when_offered` by the relay (else the mail is a dead letter); IDN domains are "
            "always accepted and mailed in their ASCII form"),
    Setting("OPTIN_LOG_LEVEL", "INFO", "log level"),
    Setting("OPTIN_LOG_FORMAT", None,
            "`json` (one object a line, with `request_id`) or `text`; default: json in "
            "production, text in development"),
    Setting("OPTIN_METRICS_DIR", None,
            "folder where every optin process of a host keeps its Prometheus counters, so "
            "`/metrics` adds up all gunicorn workers (and `optin worker`s); required with "
            "several gunicorn workers; default: unset (counters of this process only)"),
    Setting("OPTIN_INSTANCE_PATH", None,
            "folder for the development database, secret key and mail; default: Flask's "
            "instance folder"),
    Setting("OPTIN_BRAND_NAME", "Newsletter", "name shown on pages and in mails"),
    Setting("OPTIN_BRAND_LOGO_URL", None, "logo on pages and in mails (your own host)"),
    Setting("OPTIN_BRAND_COLOR", "#1d4ed8", "accent colour of buttons and links"),
    Setting("OPTIN_BRAND_TEXT_COLOR", "#1f2937", "text colour of pages and mails"),
    Setting("OPTIN_BRAND_BACKGROUND_COLOR", "#ffffff", "background colour of the page's card and mails"),
    Setting("OPTIN_TEMPLATE_DIR", None,
            "folder of your own templates (`pages/`, `email/`, `embed/`), each found there "
            "before the built-in one of the same name; default: built-in only"),
)

_KNOWN = {s.name for s in SETTINGS}


def _int(env: Mapping[str, str], name: str, minimum: int = 0) -> int:
    raw = env[name]
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str) -> float:
    try:
        return float(env[name])
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {env[name]!r}") from None


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env[name].strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be 0 or 1, got {env[name]!r}")


def _positive(env: Mapping[str, str], name: str) -> float:
    value = _float(env, name)
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a number above 0, got {env[name]!r}")
    return value


# The storages of the ``limits`` package that optin supports (and that throttle.py understands).
STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")


def _storage_url(raw: str) -> str:
    scheme, sep, _ = raw.partition("://")
    if not sep or scheme not in STORAGE_SCHEMES:
        others = ", ".join(f"{s}://" for s in STORAGE_SCHEMES[2:])
        raise ConfigError(
            f"OPTIN_RATELIMIT_STORAGE_URL must start with memory:// or redis:// (or {others}), "
            f"got {'a ' + scheme + ':// URL' if sep else 'no scheme'}"
        )
    return raw


def _rate_limit(env: Mapping[str, str], name: str) -> str:
    """``10/minute;100/hour``: checked with the ``limits`` parser Flask-Limiter uses."""
    from limits import parse_many

    raw = env[name].strip()
    try:
        parsed = parse_many(raw)
    except ValueError:
        parsed = []
    if not parsed or any(item.amount < 1 for item in parsed):
        raise ConfigError(
            f"{name} must look like 10/minute or 10/minute;100/hour, got {env[name]!r}"
        )
    return raw


def _field_map(raw: str | None) -> dict[str, str]:
    """``company:3,role:7`` -> {"company": "3", "role": "7"} (our field name -> AC field id)."""
    mapping: dict[str, str] = {}
    for entry in filter(None, (p.strip() for p in (raw or "").split(","))):
        name, sep, field_id = (part.strip() for part in entry.partition(":"))
        if not sep or not name or not field_id.isdigit():
            raise ConfigError(
                f"OPTIN_AC_FIELD_MAP entry {entry!r} must look like name:field_id (e.g. company:3)"
            )
        if name in mapping:
            raise ConfigError(f"OPTIN_AC_FIELD_MAP names {name!r} twice")
        mapping[name] = field_id
    return mapping


def _admin_tokens(raw: str | None) -> dict[str, str]:
    """``name:token`` or bare ``token`` entries → {token: name}."""
    tokens: dict[str, str] = {}
    for i, entry in enumerate(filter(None, (p.strip() for p in (raw or "").split(","))), 1):
        name, sep, token = entry.partition(":")
        if not sep:
            name, token = f"token{i}", entry
        if len(token) < 16:
            raise ConfigError(
                f"OPTIN_ADMIN_TOKENS entry {i} is shorter than 16 characters; use a random token"
            )
        tokens[token] = name
    return tokens


@dataclass(frozen=True)
class Settings:
    """The parsed configuration; see :data:`SETTINGS` for meanings and defaults."""

    env: str
    database_url: str
    secret_key: str
    hash_key: bytes
    base_url: str
    mail_url: str
    mail_from: str
    ac_url: str | None
    ac_api_key: str | None = field(repr=False)
    ac_webhook_secret: str | None = field(repr=False)
    ac_rate_limit: float
    ac_field_map: dict[str, str]
    ac_reconcile_minutes: int
    ac_timeout_seconds: float
    admin_tokens: dict[str, str] = field(repr=False)
    trusted_proxies: int
    ratelimit_storage_url: str = field(repr=False)
    ratelimit_signup: str
    ratelimit_links: str
    ratelimit_webhook: str
    mails_per_address_per_day: int
    confirm_ttl_hours: int
    resend_interval_minutes: int
    pending_retention_days: int
    proof_retention_years: int
    outbox_max_attempts: int
    outbox_retry_horizon_hours: int
    worker_poll_seconds: float
    email_check_deliverability: bool
    #: OPTIN_SMTPUTF8: "refuse" or "when_offered" (consent.addresses.SMTPUTF8_MODES).
    smtputf8: str
    log_level: str
    log_format: str
    metrics_dir: Path | None
    instance_path: Path
    brand: dict[str, str | None]
    template_dir: Path | None = None
    #: OPTIN_BASE_URL was given (else base_url is the default, which `optin serve` may move).
    base_url_set: bool = False

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def ac_dry_run(self) -> bool:
        return not self.ac_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str], instance_path: Path) -> Settings:
        """Parse and validate; raise :class:`ConfigError` with one clear line."""
        env = {s.name: s.default for s in SETTINGS if s.default is not None}
        env.update({k: v for k, v in environ.items() if k.startswith("OPTIN_")})

        mode = env.get("OPTIN_ENV") or (
            "production" if env.get("OPTIN_DATABASE_URL") else "development"
        )
        if mode not in {"development", "production"}:
            raise ConfigError(f"OPTIN_ENV must be development or production, got {mode!r}")

        database_url = env.get("OPTIN_DATABASE_URL") or f"sqlite:///{instance_path / 'optin.db'}"
        if database_url.startswith(("postgres://", "postgresql://")):
            # psycopg 3 is the driver we ship; plain URLs would ask for psycopg2.
            database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]

        secret_key = env.get("OPTIN_SECRET_KEY") or ""
        if not secret_key:
            if mode != "development":
                raise ConfigError(
                    "OPTIN_SECRET_KEY is required in production (it signs the links in mails)"
                )
            secret_key = _development_secret(instance_path)
        elif len(secret_key) < 16:
            raise ConfigError("OPTIN_SECRET_KEY must be at least 16 characters long")

        hash_key_raw = env.get("OPTIN_HASH_KEY")
        if hash_key_raw:
            hash_key = hash_key_raw.encode()
        else:
            import hashlib
            import hmac

            hash_key = hmac.new(secret_key.encode(), b"optin.address-hash", hashlib.sha256).digest()

        base_url = env["OPTIN_BASE_URL"].rstrip("/")
        if urlsplit(base_url).scheme not in {"http", "https"} or not urlsplit(base_url).netloc:
            raise ConfigError(f"OPTIN_BASE_URL must be an http(s) URL, got {base_url!r}")

        mail_url = env.get("OPTIN_MAIL_URL") or (instance_path / "mail").as_uri()
        if urlsplit(mail_url).scheme not in {"file", "smtp", "smtps"}:
            raise ConfigError("OPTIN_MAIL_URL must start with smtp://, smtps:// or file://")

        ac_url = env.get("OPTIN_AC_URL") or None
        ac_key = env.get("OPTIN_AC_API_KEY") or None
        if ac_url and not ac_key:
            raise ConfigError("OPTIN_AC_API_KEY is required when OPTIN_AC_URL is set")
        ac_parts = urlsplit(ac_url or "")
        if ac_url and (ac_parts.scheme not in {"http", "https"} or not ac_parts.netloc
                       or ac_parts.query):
            raise ConfigError("OPTIN_AC_URL must look like https://<account>.api-us1.com")

        log_level = env["OPTIN_LOG_LEVEL"].upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"OPTIN_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

        log_format = (env.get("OPTIN_LOG_FORMAT") or
                      ("text" if mode == "development" else "json")).lower()
        if log_format not in {"json", "text"}:
            raise ConfigError(f"OPTIN_LOG_FORMAT must be json or text, got {log_format!r}")

        return cls(
            env=mode,
            database_url=database_url,
            secret_key=secret_key,
            hash_key=hash_key,
            base_url=base_url,
            mail_url=mail_url,
            mail_from=env["OPTIN_MAIL_FROM"],
            ac_url=ac_url,
            ac_api_key=ac_key,
            ac_webhook_secret=env.get("OPTIN_AC_WEBHOOK_SECRET") or None,
            ac_rate_limit=_positive(env, "OPTIN_AC_RATE_LIMIT"),
            ac_field_map=_field_map(env.get("OPTIN_AC_FIELD_MAP")),
            ac_reconcile_minutes=_int(env, "OPTIN_AC_RECONCILE_MINUTES"),
            ac_timeout_seconds=_positive(env, "OPTIN_AC_TIMEOUT_SECONDS"),
            admin_tokens=_admin_tokens(env.get("OPTIN_ADMIN_TOKENS")),
            trusted_proxies=_int(env, "OPTIN_TRUSTED_PROXIES"),
            ratelimit_storage_url=_storage_url(env["OPTIN_RATELIMIT_STORAGE_URL"]),
            ratelimit_signup=_rate_limit(env, "OPTIN_RATELIMIT_SIGNUP"),
            ratelimit_links=_rate_limit(env, "OPTIN_RATELIMIT_LINKS"),
            ratelimit_webhook=_rate_limit(env, "OPTIN_RATELIMIT_WEBHOOK"),
            mails_per_address_per_day=_int(env, "OPTIN_MAILS_PER_ADDRESS_PER_DAY", 1),
            confirm_ttl_hours=_int(env, "OPTIN_CONFIRM_TTL_HOURS", 1),
            resend_interval_minutes=_int(env, "OPTIN_RESEND_INTERVAL_MINUTES"),
            pending_retention_days=_int(env, "OPTIN_PENDING_RETENTION_DAYS", 1),
            proof_retention_years=_int(env, "OPTIN_PROOF_RETENTION_YEARS", 1),
            outbox_max_attempts=_int(env, "OPTIN_OUTBOX_MAX_ATTEMPTS", 1),
            outbox_retry_horizon_hours=_int(env, "OPTIN_OUTBOX_RETRY_HORIZON_HOURS", 1),
            worker_poll_seconds=_float(env, "OPTIN_WORKER_POLL_SECONDS"),
            email_check_deliverability=_bool(env, "OPTIN_EMAIL_CHECK_DELIVERABILITY"),
            smtputf8=_smtputf8(env["OPTIN_SMTPUTF8"]),
            log_level=log_level,
            log_format=log_format,
            metrics_dir=_metrics_dir(env.get("OPTIN_METRICS_DIR")),
            instance_path=instance_path,
            brand=brand_from(
                name=env["OPTIN_BRAND_NAME"],
                logo_url=env.get("OPTIN_BRAND_LOGO_URL") or None,
                primary_color=_color(env["OPTIN_BRAND_COLOR"]),
                text_color=_color(env["OPTIN_BRAND_TEXT_COLOR"], "OPTIN_BRAND_TEXT_COLOR"),
                background_color=_color(env["OPTIN_BRAND_BACKGROUND_COLOR"],
                                        "OPTIN_BRAND_BACKGROUND_COLOR"),
            ),
            template_dir=_template_dir(env.get("OPTIN_TEMPLATE_DIR")),
            base_url_set=bool(environ.get("OPTIN_BASE_URL")),
        )

    def flask_config(self) -> dict[str, Any]:
        """What the Flask extensions read from ``app.config``."""
        engine_options: dict[str, Any] = {}  # idle connections are pinged: extensions.py
        if self.database_url.startswith("sqlite"):
            # The web thread and the in-process worker share the file.
            engine_options["connect_args"] = {"timeout": 30}
        return {
            "SECRET_KEY": self.secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": engine_options,
            "RATELIMIT_STORAGE_URI": self.ratelimit_storage_url,
            # Counts slide over the window (two counters per key, unlike a moving window's list).
            "RATELIMIT_STRATEGY": "sliding-window-counter",
            "RATELIMIT_KEY_PREFIX": "optin",
            # A storage outage lets requests through (logged) rather than failing signups.
            "RATELIMIT_SWALLOW_ERRORS": True,
            "MAX_CONTENT_LENGTH": 64 * 1024,
            "API_TITLE": "optin",
            "API_VERSION": "1",
            "OPENAPI_VERSION": "3.0.3",
            "OPENAPI_URL_PREFIX": "/",
            "OPENAPI_JSON_PATH": "openapi.json",
        }


def _smtputf8(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"refuse", "when_offered"}:
        raise ConfigError(f"OPTIN_SMTPUTF8 must be refuse or when_offered, got {raw!r}")
    return value


def _color(value: str, name: str = "OPTIN_BRAND_COLOR") -> str:
    if not re.fullmatch(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?", value):
        raise ConfigError(f"{name} must be a hex colour like #1d4ed8, got {value!r}")
    return value


def _template_dir(raw: str | None) -> Path | None:
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"OPTIN_TEMPLATE_DIR must be an existing folder, got {raw!r}")
    return path


def _metrics_dir(raw: str | None) -> Path | None:
    if not raw:
        return None
    path = Path(raw).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"OPTIN_METRICS_DIR {raw!r} cannot be created: {exc.strerror}") from None
    return path.resolve()


def export_metrics_dir(environ: Mapping[str, str] = os.environ) -> None:
    """Hand OPTIN_METRICS_DIR to prometheus-client, which reads PROMETHEUS_MULTIPROC_DIR
    itself, once, when it is first imported (``optin.metrics`` calls this before that)."""
    directory = environ.get("OPTIN_METRICS_DIR")
    if directory:
        with contextlib.suppress(OSError):  # Settings.from_env reports it as a ConfigError
            Path(directory).mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """OPTIN_* names that nothing reads: usually a typo worth a warning."""
    return sorted(k for k in environ if k.startswith("OPTIN_") and k not in _KNOWN)


def _development_secret(instance_path: Path) -> str:
    """One random key per development instance, kept so links survive restarts."""
    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


def markdown_table() -> str:
    """The configuration table for the README (``python -m optin.config``)."""
    rows = ["| variable | meaning | default |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default is not None else "see meaning"
        rows.append(f"| `{s.name}` | {s.help} | {default} |")
    return "\n".join(rows)


def current_settings() -> Settings:
    """The settings of the running app."""
    return current_app.extensions["optin.settings"]


if __name__ == "__main__":
    print(markdown_table())

__all__ = [
    "ConfigError",
    "MIGRATIONS_DIR",
    "SETTINGS",
    "Settings",
    "TEMPLATE_DIR",
    "current_settings",
    "unknown_variables",
]
