"""The one declaration of every ``OPTIN_*`` variable: its type, default and meaning.

Each field below is one variable (``OPTIN_`` + its name in capitals); its
``description`` is the README's Configuration table (``python -m optin.config``
prints it). Validators say what a value must look like; an unset or empty
variable takes the default.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limits import parse_many
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from optin.brand import brand_from
from optin.config.errors import config_error, invalid
from optin.config.instance import instance_secret
from optin.config.mail import MailTransport, parse_mail_url
from optin.config.storage import SharedStorage, parse_storage_url

PREFIX = "OPTIN_"
#: Who the generated development token is in the audit trail.
DEVELOPMENT_OPERATOR = "development"
_COLOR = re.compile(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?")


def variable(field_name: str) -> str:
    """``confirm_ttl_hours`` -> ``OPTIN_CONFIRM_TTL_HOURS`` (a variable's name stays as it is)."""
    return field_name if field_name.startswith(PREFIX) else PREFIX + field_name.upper()


def address_lines(text: str | None) -> list[str]:
    """A postal address as its lines: a newline, a typed ``\\n`` or a ``;`` between them
    (``Musterstraße 1; 10115 Berlin``): OPTIN_CONTROLLER_ADDRESS and a list's own address
    are written on one line in an environment variable or a CLI flag."""
    text = (text or "").replace("\\n", "\n").replace(";", "\n")
    return [line.strip() for line in text.splitlines() if line.strip()]


class Settings(BaseSettings):
    """The parsed configuration. Build it with :meth:`from_env`."""

    model_config = SettingsConfigDict(frozen=True, alias_generator=variable, extra="ignore",
                                      validate_default=True)

    env: Literal["development", "production"] = Field(description=(
        "`development` or `production`; default: development while OPTIN_DATABASE_URL is "
        "unset (the embedded SQLite), production otherwise"))
    instance_path: Path = Field(description=(
        "folder for the development database, secret key, operator token and mail; "
        "default: Flask's instance folder"))
    database_url: str = Field("", description=(
        "SQLAlchemy URL; default: SQLite file in the instance folder"))
    secret_key: str = Field("", repr=False, description=(
        "signs links; required in production, generated once into the instance folder "
        "in development"))
    hash_key: bytes = Field(b"", repr=False, description=(
        "key of the address hash kept for suppression; default: derived from "
        "OPTIN_SECRET_KEY (set it to rotate the secret key without losing suppression)"))
    base_url: str = Field("http://localhost:8000", description=(
        "public URL that links in mails point to"))
    mail_url: str = Field("", repr=False, description=(
        "`smtp://user:pass@host:port` (`?starttls=1`), `smtps://…`, or `file:///dir`; "
        "default: file:// + instance folder /mail"))
    mail_from: str = Field("newsletter@localhost", description="sender address")
    ac_url: str | None = Field(None, description=(
        "ActiveCampaign account API URL; unset = dry-run"))
    ac_api_key: str | None = Field(None, repr=False, description="ActiveCampaign API key")
    ac_webhook_secret: str | None = Field(None, repr=False, description=(
        "shared secret ActiveCampaign webhooks carry; unset = webhooks refused"))
    ac_rate_limit: float = Field(4, gt=0, allow_inf_nan=False, description=(
        "ActiveCampaign requests per second, all workers together (the account allows 5)"))
    ac_field_map: dict[str, str] = Field(default_factory=dict, description=(
        "personal fields sent to ActiveCampaign custom fields, `name:field id,…` "
        "(e.g. `company:3,role:7`); unset = only address and names"))
    ac_reconcile_minutes: int = Field(60, ge=0, description=(
        "how often the worker compares ActiveCampaign's lists with the service; 0 = never"))
    ac_timeout_seconds: float = Field(10, gt=0, allow_inf_nan=False, description=(
        "read timeout of one ActiveCampaign request"))
    admin_tokens: dict[str, str] = Field(default_factory=dict, repr=False, description=(
        "comma-separated bearer tokens for the operator API (`name:token` names one for "
        "the audit trail); unset = operator API refused in production, and in development "
        "a token generated once into the instance folder (`optin serve` prints it)"))
    trusted_proxies: int = Field(0, ge=0, description=(
        "how many proxies' X-Forwarded-For hops to trust"))
    ratelimit_storage_url: str = Field("memory://", repr=False, description=(
        "where rate-limit counts live: `memory://` (one process) or `redis://host:port/db` "
        "(shared by every host and worker process; also `rediss://`, `redis+unix://`, "
        "`redis+sentinel://host:port,…/service`, `redis+cluster://host:port,…`)"))
    ratelimit_signup: str = Field("10/minute;100/hour", description=(
        "signups (`POST /v1/subscriptions`) per client IP (IPv6: per /64); `;` separates "
        "limits, e.g. `10/minute;100/hour`"))
    ratelimit_links: str = Field("20/minute;200/hour", description=(
        "requests per client IP to the confirm and unsubscribe links (page and button)"))
    ratelimit_webhook: str = Field("300/minute", description=(
        "ActiveCampaign webhook posts per client IP (a refused one is caught up by "
        "`optin ac reconcile`)"))
    mails_per_address_per_day: int = Field(3, ge=1, description=(
        "confirmation mails to one address in 24 hours, whatever the IP or list; signups "
        "beyond it are answered as usual and send no mail"))
    confirm_ttl_hours: int = Field(72, ge=1, le=8760, description="validity of a confirmation link")
    resend_interval_minutes: int = Field(15, ge=0, description=(
        "a pending signup that signs up again gets at most one new mail per interval"))
    pending_retention_days: int = Field(14, ge=1, le=3650, description=(
        "days after signup before an unconfirmed signup is minimized"))
    proof_retention_years: int = Field(3, ge=1, le=100, description=(
        "years after the end of the withdrawal year that proof is kept"))
    proof_export_page_size: int = Field(10, ge=1, le=500, description=(
        "proofs in one answer of `GET /v1/lists/<slug>/proofs` (`?page=N` and the `Link` "
        "header's `rel=next` give the rest): few enough that a page is laid out well within "
        "the web tier's 30 s timeout; `optin proof --all` exports a whole list at once"))
    outbox_max_attempts: int = Field(12, ge=1, description=(
        "delivery attempts before an outbox row is dead"))
    outbox_retry_horizon_hours: int = Field(48, ge=1, description=(
        "age after which a failing outbox row is dead even with attempts left"))
    worker_poll_seconds: float = Field(1.0, description=(
        "how long an idle worker sleeps between polls (on PostgreSQL new work wakes it at "
        "once through LISTEN/NOTIFY; the poll is the fallback)"))
    worker_lease_seconds: float = Field(15, gt=0, allow_inf_nan=False, description=(
        "how long a claimed outbox row stays a worker's without a heartbeat: the rows of "
        "a worker that died are delivered by another after this"))
    worker_heartbeat_seconds: float = Field(5, gt=0, allow_inf_nan=False, description=(
        "how often a live worker renews the leases of the rows it holds (well below "
        "OPTIN_WORKER_LEASE_SECONDS)"))
    breaker_failures: int = Field(5, ge=1, description=(
        "consecutive failures of a destination (the SMTP relay, ActiveCampaign: refused or "
        "dropped connections, timeouts, 5xx) that pause its rows without spending their "
        "attempts"))
    breaker_probe_seconds: float = Field(5, gt=0, allow_inf_nan=False, description=(
        "while a destination is paused, one worker sends one row as a probe this often; "
        "the first that goes through resumes delivery"))
    withdrawal_lock_wait_seconds: float = Field(2, gt=0, le=20, allow_inf_nan=False,
                                                description=(
        "PostgreSQL: how long a withdrawal (unsubscribe link, one-click, webhook, erasure) "
        "waits for a subscription a mail delivery holds before it is queued for the worker "
        "instead and answered as done (well below gunicorn's timeout)"))
    worker_threads: int = Field(4, ge=1, le=64, description=(
        "rows one `optin worker` delivers at once, each with its own SMTP connection (mind "
        "the relay's limit on connections); on SQLite, whose writers take turns, one"))
    email_check_deliverability: bool = Field(False, description=(
        "1 = look up the address's domain in DNS at signup"))
    smtputf8: Literal["refuse", "when_offered"] = Field("refuse", description=(
        "addresses with non-ASCII characters before the @ (`jörg@example.org`) can only be "
        "mailed with SMTPUTF8: `refuse` them at signup (422), or accept them and mail them "
        "`when_offered` by the relay (else the mail is a dead letter); IDN domains are "
        "always accepted and mailed in their ASCII form"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_format: str = Field("", description=(
        "`json` (one object a line, with `request_id`) or `text`; default: json in "
        "production, text in development"))
    metrics_dir: Path | None = Field(None, description=(
        "folder where every optin process of a host keeps its Prometheus counters, so "
        "`/metrics` adds up all gunicorn workers (and `optin worker`s); required with "
        "several gunicorn workers; default: unset (counters of this process only)"))
    brand_name: str = Field("Newsletter", description="name shown on pages and in mails")
    brand_logo_url: str | None = Field(None, description=(
        "logo on pages and in mails (your own host)"))
    brand_color: str = Field("#1d4ed8", description="accent colour of buttons and links")
    brand_text_color: str = Field("#1f2937", description="text colour of pages and mails")
    brand_background_color: str = Field("#ffffff", description=(
        "background colour of the page's card and mails"))
    template_dir: Path | None = Field(None, description=(
        "folder of your own templates (`pages/`, `email/`, `embed/`), each found there "
        "before the built-in one of the same name; default: built-in only"))
    ledger_signing_key: str = Field("", repr=False, description=(
        "Ed25519 private key that signs the ledger checkpoints: base64 of its 32 bytes "
        "(`optin ledger new-key` makes one); keep it outside the database; in development "
        "generated once into the instance folder; unset in production = no checkpoints "
        "(the worker logs a warning)"))
    ledger_public_keys: str = Field("", description=(
        "comma-separated public keys (base64) of earlier signing keys, whose checkpoints "
        "`optin ledger verify` still accepts after a key rotation; the current key's is "
        "always accepted"))
    ledger_checkpoint_file: Path = Field(None, description=(  # type: ignore[assignment]
        "file the checkpoints are appended to (one JSON line each; also logged), and that "
        "`optin ledger verify` checks the database against; put it where the database's "
        "admin cannot rewrite it; default: instance folder /ledger-checkpoints.jsonl"))
    ledger_checkpoint_minutes: int = Field(10, ge=0, description=(
        "how often the worker signs a checkpoint (also after each retention run that "
        "minimized something); 0 = only by `optin ledger checkpoint`"))
    ledger_tsa_url: str | None = Field(None, description=(
        "RFC 3161 time-stamping authority each checkpoint is time-stamped by "
        "(e.g. `https://freetsa.org/tsr`); unset = none"))
    controller_name: str = Field("", description=(
        "legal name of the controller (the company that collects the consents), on every "
        "proof of consent and in the page and mail footers of lists without their own "
        "(`lists update --controller`); required in production"))
    controller_address: str = Field("", description=(
        "postal address of the controller (`\\n` or `;` between lines), on every proof and "
        "in the page and mail footers of lists without their own (`lists update "
        "--postal-address`; German commercial mail needs it); required in production"))
    proof_timezone: str = Field("Europe/Berlin", description=(
        "time zone dates are shown in: on the proof of consent (named, with UTC beside), "
        "and on pages and in mails"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str], instance_path: Path) -> Settings:
        """Parse and validate the ``OPTIN_*`` entries of ``environ`` (and nothing else: a
        test's mapping replaces the environment); raise :class:`ConfigError` in one line."""
        given: dict[str, Any] = {k: v for k, v in environ.items() if k.startswith(PREFIX) and v}
        given[variable("instance_path")] = instance_path
        try:
            return cls(**given)
        except ValidationError as exc:
            raise config_error(exc, variable, SECRET_VARIABLES) from None

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what :meth:`from_env` passes: the caller names the environment."""
        return (init_settings,)

    # --- what the rest of the package reads -------------------------------------------------

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def controller_address_lines(self) -> list[str]:
        """OPTIN_CONTROLLER_ADDRESS as lines (a newline, ``\\n`` or ``;`` between them)."""
        return address_lines(self.controller_address)

    @property
    def ac_dry_run(self) -> bool:
        return not self.ac_url

    @property
    def base_url_set(self) -> bool:
        """OPTIN_BASE_URL was given (else base_url is the default, which `optin serve` may move)."""
        return "base_url" in self.model_fields_set

    @cached_property
    def mail(self) -> MailTransport:
        """OPTIN_MAIL_URL, parsed (validated when the settings were made)."""
        return parse_mail_url(self.mail_url)

    @cached_property
    def shared_storage(self) -> SharedStorage | None:
        """The Redis behind OPTIN_RATELIMIT_STORAGE_URL; None for ``memory://``."""
        return parse_storage_url(self.ratelimit_storage_url)

    @cached_property
    def brand(self) -> dict[str, str | None]:
        return brand_from(name=self.brand_name, logo_url=self.brand_logo_url,
                          primary_color=self.brand_color, text_color=self.brand_text_color,
                          background_color=self.brand_background_color)

    def flask_config(self) -> dict[str, Any]:
        """What the Flask extensions read from ``app.config``."""
        # Idle connections are pinged (extensions.py). A database error's text never quotes
        # the statement's values (names, IPs, fields), in logs or in an outbox row's error.
        engine_options: dict[str, Any] = {"hide_parameters": True}
        if self.database_url.startswith("sqlite"):
            # The web thread and the in-process worker share the file.
            engine_options["connect_args"] = {"timeout": 30}
        else:
            # A worker's delivery thread holds its transaction's connection and takes a second
            # one for the send intent; heartbeat, breakers and LISTEN take one each.
            engine_options["pool_size"] = max(5, 2 * self.worker_threads + 3)
        return {
            "SECRET_KEY": self.secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": engine_options,
            "MAX_CONTENT_LENGTH": 64 * 1024,
            "API_TITLE": "optin",
            "API_VERSION": "1",
            "OPENAPI_VERSION": "3.0.3",
            "OPENAPI_URL_PREFIX": "/",
            "OPENAPI_JSON_PATH": "openapi.json",
        }

    # --- development and production ---------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _embedded_database_means_development(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get(variable("env")):
            mode = "production" if data.get(variable("database_url")) else "development"
            data = {**data, variable("env"): mode}
        return data

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return f"sqlite:///{info.data.get('instance_path', Path()) / 'optin.db'}"
        if value.startswith(("postgres://", "postgresql://")):
            # psycopg 3 is the driver we ship; plain URLs would ask for psycopg2.
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str, info: ValidationInfo) -> str:
        if value:
            if len(value) < 16:
                raise invalid("must be at least 16 characters long")
            return value
        if info.data.get("env") != "development" or "instance_path" not in info.data:
            raise invalid("is required in production (it signs the links in mails)")
        return instance_secret(info.data["instance_path"], "secret_key")

    @field_validator("controller_name", "controller_address")
    @classmethod
    def _controller(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if not value and info.data.get("env") != "development":
            raise invalid("is required in production (the proof of consent names the "
                          "controller: legal name and postal address)")
        return value

    @field_validator("proof_timezone")
    @classmethod
    def _proof_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise invalid(f"must be a time zone name like Europe/Berlin, not {value!r}") from None
        return value

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, value: bytes, info: ValidationInfo) -> bytes:
        if value:
            return value
        secret = str(info.data.get("secret_key", "")).encode()
        return hmac.new(secret, b"optin.address-hash", hashlib.sha256).digest()

    @field_validator("admin_tokens", mode="before")
    @classmethod
    def _admin_tokens(cls, value: Any) -> Any:
        """``name:token`` or bare ``token`` entries -> {token: name}."""
        if not isinstance(value, str):
            return value
        tokens: dict[str, str] = {}
        for i, entry in enumerate(_entries(value), 1):
            name, sep, token = entry.partition(":")
            if not sep:
                name, token = f"token{i}", entry
            if len(token) < 16:
                raise invalid(f"entry {i} is shorter than 16 characters; use a random token")
            tokens[token] = name
        return tokens

    @field_validator("admin_tokens")
    @classmethod
    def _development_token(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """In development the operator API works out of the box, with a kept token."""
        if value or info.data.get("env") != "development" or "instance_path" not in info.data:
            return value
        return {instance_secret(info.data["instance_path"], "admin_token"): DEVELOPMENT_OPERATOR}

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str, info: ValidationInfo) -> str:
        value = (value or ("text" if info.data.get("env") == "development" else "json")).lower()
        if value not in {"json", "text"}:
            raise invalid(f"must be json or text, got {value!r}")
        return value

    @field_validator("ledger_signing_key")
    @classmethod
    def _ledger_signing_key(cls, value: str, info: ValidationInfo) -> str:
        """Checked to be a key; in development made once (32 random bytes, base64)."""
        if not value and info.data.get("env") == "development" and "instance_path" in info.data:
            value = instance_secret(info.data["instance_path"], "ledger_signing_key")
        if value and len(_key_bytes(value)) != 32:
            raise invalid("must be the base64 of a 32-byte Ed25519 private key "
                          "(`optin ledger new-key` makes one)")
        return value

    @field_validator("ledger_public_keys")
    @classmethod
    def _ledger_public_keys(cls, value: str) -> str:
        for i, entry in enumerate(_entries(value), 1):
            if len(_key_bytes(entry)) != 32:
                raise invalid(f"entry {i} is not the base64 of a 32-byte Ed25519 public key")
        return value

    @field_validator("ledger_checkpoint_file", mode="before")
    @classmethod
    def _ledger_checkpoint_file(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value == "":
            return Path(info.data.get("instance_path", Path.cwd())) / "ledger-checkpoints.jsonl"
        return Path(value).expanduser() if isinstance(value, str) else value

    @field_validator("ledger_tsa_url")
    @classmethod
    def _ledger_tsa_url(cls, value: str | None) -> str | None:
        if value and (urlsplit(value).scheme not in {"http", "https"} or not urlsplit(value).netloc):
            raise invalid("must be an http(s) URL")
        return value

    @cached_property
    def ledger_key_seed(self) -> bytes | None:
        """OPTIN_LEDGER_SIGNING_KEY's 32 bytes; None when checkpoints are off."""
        return _key_bytes(self.ledger_signing_key) if self.ledger_signing_key else None

    @cached_property
    def ledger_past_keys(self) -> tuple[bytes, ...]:
        """OPTIN_LEDGER_PUBLIC_KEYS, decoded."""
        return tuple(_key_bytes(entry) for entry in _entries(self.ledger_public_keys))

    # --- the shape of single values ---------------------------------------------------------

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.rstrip("/")
        if urlsplit(value).scheme not in {"http", "https"} or not urlsplit(value).netloc:
            raise invalid(f"must be an http(s) URL, got {value!r}")
        return value

    @field_validator("mail_url")
    @classmethod
    def _mail_url(cls, value: str, info: ValidationInfo) -> str:
        value = value or (info.data.get("instance_path", Path.cwd()) / "mail").as_uri()
        try:
            parse_mail_url(value)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return value

    @field_validator("ac_url")
    @classmethod
    def _ac_url(cls, value: str | None) -> str | None:
        parts = urlsplit(value or "")
        if value and (parts.scheme not in {"http", "https"} or not parts.netloc or parts.query):
            raise invalid("must look like https://<account>.api-us1.com")
        return value

    @field_validator("ac_api_key")
    @classmethod
    def _ac_api_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("ac_url") and not value:
            raise invalid("is required when OPTIN_AC_URL is set")
        return value

    @field_validator("ac_field_map", mode="before")
    @classmethod
    def _ac_field_map(cls, value: Any) -> Any:
        """``company:3,role:7`` -> {"company": "3", "role": "7"} (our field -> AC field id)."""
        if not isinstance(value, str):
            return value
        mapping: dict[str, str] = {}
        for entry in _entries(value):
            name, sep, field_id = (part.strip() for part in entry.partition(":"))
            if not sep or not name or not field_id.isdigit():
                raise invalid(f"entry {entry!r} must look like name:field_id (e.g. company:3)")
            if name in mapping:
                raise invalid(f"names {name!r} twice")
            mapping[name] = field_id
        return mapping

    @field_validator("ratelimit_storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        try:
            parse_storage_url(value)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return value

    @field_validator("ratelimit_signup", "ratelimit_links", "ratelimit_webhook")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        """``10/minute;100/hour``: checked with the ``limits`` parser that ``ops.ratelimits`` uses."""
        value = value.strip()
        try:
            parsed = parse_many(value)
        except ValueError:
            parsed = []
        if not parsed or any(item.amount < 1 for item in parsed):
            raise invalid(f"must look like 10/minute or 10/minute;100/hour, got {value!r}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("metrics_dir")
    @classmethod
    def _metrics_dir(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        try:
            value.expanduser().mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise invalid(f"{str(value)!r} cannot be created: {exc.strerror}") from None
        return value.expanduser().resolve()

    @field_validator("brand_color", "brand_text_color", "brand_background_color")
    @classmethod
    def _color(cls, value: str) -> str:
        if not _COLOR.fullmatch(value):
            raise invalid(f"must be a hex colour like #1d4ed8, got {value!r}")
        return value

    @field_validator("brand_logo_url")
    @classmethod
    def _logo_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The pages' CSP loads images from https: only; in production an ``http:`` logo
        would be a broken image on every page, so it is refused at start-up."""
        if value and info.data.get("env") == "production" and urlsplit(value).scheme == "http":
            raise invalid("must be an https:// URL in production (the pages' "
                          "Content-Security-Policy blocks http: images)")
        return value

    @field_validator("template_dir")
    @classmethod
    def _template_dir(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.expanduser().is_dir():
            raise invalid(f"must be an existing folder, got {str(value)!r}")
        return value.expanduser().resolve()


def _key_bytes(value: str) -> bytes:
    """A key written in base64 (standard or URL-safe, padded or not); b"" if it is not."""
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _entries(raw: str) -> list[str]:
    """The non-empty entries of a comma-separated list."""
    return [entry for entry in (part.strip() for part in raw.split(",")) if entry]


def declared() -> dict[str, FieldInfo]:
    """Every variable, in the order of the declaration: {OPTIN_NAME: its field}."""
    return {variable(name): info for name, info in Settings.model_fields.items()}


#: Variables whose values an error message must not repeat.
SECRET_VARIABLES = frozenset(name for name, info in declared().items() if not info.repr)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """OPTIN_* names that nothing reads: usually a typo worth a warning."""
    known = declared()
    return sorted(k for k in environ if k.startswith(PREFIX) and k not in known)
