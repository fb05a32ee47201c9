"""``optin check``: every outside part tried with the real settings, before traffic is.

An operator who has just configured production runs it once: the database and its
migrations, the SMTP relay (connect, TLS, login; a test mail only with
``--send-to``), ActiveCampaign (the key, every list id a list maps to), Redis,
and the settings that are only wrong in production (an ``http://`` base URL, short
secrets, no operator token). Each check answers ``ok``, ``FAIL`` or ``skip`` (not
configured, or not reachable because an earlier check failed); only ``FAIL``
fails the run.

Nothing here changes state (the test mail aside), and no secret reaches the
output: an error's text passes through :func:`redact` with every configured
secret, and names a setting rather than quoting it.
"""

from __future__ import annotations

import ipaddress
import smtplib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from urllib.parse import unquote, urlsplit

from alembic.runtime.migration import MigrationContext
from limits.storage import storage_from_string
from sqlalchemy import text
from sqlalchemy.engine import make_url

from optin.activecampaign.client import ActiveCampaignClient, ActiveCampaignError, AuthError
from optin.config import Settings
from optin.consent import lists
from optin.delivery.mailer import FileBackend, RenderedMail, SMTPBackend, backend_from_url, build_message
from optin.extensions import db
from optin.ops.logs import settings_secrets
from optin.web.health import migration_heads

OK, FAIL, SKIP = "ok", "FAIL", "skip"
#: Shortest secret accepted in production: 32 characters, e.g. ``secrets.token_urlsafe(32)``
#: (43 characters, 256 random bits) passes, a typed password does not.
MIN_SECRET_LENGTH = 32
GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
REDIS_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, FAIL or SKIP
    detail: str


def run_all(settings: Settings, *, send_to: str | None = None) -> list[Check]:
    """Every check, in the order of the table (needs an app context)."""
    secrets = all_secrets(settings)
    found: list[Check] = []
    database_ok = True
    for check in database():
        database_ok = database_ok and check.status != FAIL
        found.append(check)
    found.extend(mail(settings, send_to))
    found.extend(activecampaign(settings, database_ok=database_ok))
    found.append(redis(settings))
    found.extend([base_url(settings), secret_lengths(settings), admin_tokens(settings)])
    return [Check(c.name, c.status, redact(c.detail, secrets)) for c in found]


def failed(checks: Iterable[Check]) -> list[Check]:
    """The checks that fail the run (a skip does not)."""
    return [c for c in checks if c.status == FAIL]


def table(checks: list[Check]) -> str:
    """The checks as an aligned table with a last line that sums them up."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'check'.ljust(width)}  result  detail"]
    lines += [f"{c.name.ljust(width)}  {c.status.ljust(6)}  {c.detail}" for c in checks]
    bad, skipped = failed(checks), sum(c.status == SKIP for c in checks)
    lines.append(f"{len(bad)} of {len(checks)} checks failed" if bad else
                 f"all {len(checks) - skipped} checks passed ({skipped} skipped)")
    return "\n".join(lines)


# --- secrets kept out of the output -------------------------------------------------


def all_secrets(settings: Settings) -> list[str]:
    """What the logs blank, and the passwords of the database and Redis URLs."""
    found = [s for s in settings_secrets(settings) if s]
    found.append(settings.hash_key.decode(errors="replace"))
    for url in (settings.database_url, settings.ratelimit_storage_url):
        password = urlsplit(url).password
        if password:
            found += [password, unquote(password)]
    return found


def redact(detail: str, secrets: Iterable[str]) -> str:
    """``detail`` with every secret replaced by ``[redacted]`` (longest first, so a secret
    holding another goes whole; as in the logs, values under 6 characters are left, since
    they would blank ordinary words)."""
    for secret in sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True):
        detail = detail.replace(secret, "[redacted]")
    return detail


def _error(exc: BaseException) -> str:
    """An exception's class and its first line (the caller redacts it)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# --- the database ----------------------------------------------------------------------


def database() -> Iterator[Check]:
    """Reachable, and its schema at the newest migration (what ``/readyz`` asks too)."""
    backend = make_url(db.engine.url).get_backend_name()
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # any failure to reach it is the finding
        yield Check("database", FAIL, f"{backend} does not answer: {_error(exc)}")
        yield Check("database migrations", SKIP, "database unreachable")
        return
    yield Check("database", OK, f"{backend} answers")
    heads = migration_heads()
    if current == heads:
        yield Check("database migrations", OK, f"at head ({', '.join(sorted(heads))})")
    else:
        yield Check("database migrations", FAIL,
                    f"schema at {', '.join(sorted(current)) or 'no migration'}, code expects "
                    f"{', '.join(sorted(heads))}: run `optin db upgrade`")


# --- mail --------------------------------------------------------------------------------


def mail(settings: Settings, send_to: str | None) -> Iterator[Check]:
    backend = backend_from_url(settings.mail_url)
    if isinstance(backend, FileBackend):
        yield _file_backend(settings, backend)
        return
    assert isinstance(backend, SMTPBackend)
    yield from _smtp(settings, backend, send_to)


def _file_backend(settings: Settings, backend: FileBackend) -> Check:
    if not settings.development:
        return Check("mail", FAIL, "OPTIN_MAIL_URL is a folder: no mail reaches anyone; "
                                   "set it to smtp://… or smtps://…")
    return Check("mail", OK, f"development: written to {backend.directory}")


def _smtp(settings: Settings, backend: SMTPBackend, send_to: str | None) -> Iterator[Check]:
    """Connect, STARTTLS, log in and (``--send-to``) send, each its own row."""
    where = f"{backend.host}:{backend.port}"
    tls = _tls_policy(backend)
    steps: list[tuple[str, Callable[[smtplib.SMTP], object], str]] = []
    if backend.starttls:
        steps.append(("smtp starttls", backend.secure, "STARTTLS, certificate verified"))
    if backend.username:
        steps.append(("smtp login", backend.login, "login accepted"))
    if send_to:
        steps.append(("smtp send", lambda conn: conn.send_message(_test_mail(settings, send_to)),
                      "test mail accepted by the relay"))
    try:
        conn = backend.open()
    except Exception as exc:  # refused, timed out, a TLS failure of smtps://
        yield Check("smtp connect", FAIL, f"{where}: {_error(exc)}")
        yield from (Check(name, SKIP, "no connection") for name, _, _ in steps)
        return
    try:
        yield Check("smtp connect", OK, f"{where} answers" + (
            " over TLS, certificate verified" if backend.implicit_tls else ""))
        if tls is not None:
            yield tls
            if tls.status == FAIL:  # never hand the password to an unencrypted connection
                yield from (Check(name, SKIP, "not tried without TLS") for name, _, _ in steps)
                return
        for i, (name, step, success) in enumerate(steps):
            try:
                step(conn)
            except Exception as exc:
                yield Check(name, FAIL, _error(exc))
                yield from (Check(later, SKIP, f"after the failed {name}")
                            for later, _, _ in steps[i + 1:])
                return
            yield Check(name, OK, success)
        if not send_to:
            yield Check("smtp send", SKIP, "nothing sent (--send-to ADDRESS sends a test mail)")
    finally:
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()


def _tls_policy(backend: SMTPBackend) -> Check | None:
    """None when the URL asks for TLS; plain SMTP is fine to a relay on this machine only."""
    if backend.implicit_tls or backend.starttls:
        return None
    try:
        local = ipaddress.ip_address(backend.host).is_loopback
    except ValueError:
        local = backend.host == "localhost"
    if local:
        return Check("smtp starttls", SKIP, "no TLS to a relay on this machine")
    return Check("smtp starttls", FAIL, "mail (and the password) would cross the network "
                                        "unencrypted: add ?starttls=1 or use smtps://")


def _test_mail(settings: Settings, to: str) -> Message:
    body = ("This test mail was sent by `optin check --send-to` to show that the relay "
            "accepts mail from optin.\n")
    rendered = RenderedMail("optin check: test mail", body, f"<p>{body}</p>", "check", "")
    return build_message(rendered, to_email=to, to_name=None, sender=settings.mail_from)


# --- ActiveCampaign ----------------------------------------------------------------------


def activecampaign(settings: Settings, *, database_ok: bool) -> Iterator[Check]:
    """The key is accepted, and every list id a list maps to exists in the account."""
    if settings.ac_dry_run or not settings.ac_api_key:
        yield Check("activecampaign", SKIP, "dry-run: OPTIN_AC_URL is unset, nothing is synced")
        return
    assert settings.ac_url
    try:
        with ActiveCampaignClient(settings.ac_url, settings.ac_api_key,
                                  timeout=(3.05, settings.ac_timeout_seconds)) as client:
            account = {str(item.get("id")): str(item.get("name") or "") for item in client.lists()}
    except AuthError as exc:
        yield Check("activecampaign", FAIL, f"OPTIN_AC_API_KEY refused ({exc.status})")
        return
    except ActiveCampaignError as exc:
        yield Check("activecampaign", FAIL, str(exc))
        return
    yield Check("activecampaign", OK, f"key accepted; {len(account)} lists in the account")
    if not database_ok:
        yield Check("activecampaign lists", SKIP, "database unreachable")
        return
    mapped = [m for m in lists.all_lists() if m.ac_list_id is not None]
    if not mapped:
        yield Check("activecampaign lists", SKIP, "no list has an ActiveCampaign list id")
    for mailing_list in mapped:
        name = f"activecampaign list {mailing_list.slug}"
        ac_name = account.get(str(mailing_list.ac_list_id))
        if ac_name is None:
            yield Check(name, FAIL, f"ActiveCampaign has no list {mailing_list.ac_list_id}: "
                                    f"`optin lists update {mailing_list.slug} --ac-list-id ID`")
        else:
            yield Check(name, OK, f"list {mailing_list.ac_list_id} ({ac_name})")


# --- Redis and the settings ----------------------------------------------------------------


def redis(settings: Settings) -> Check:
    url = settings.ratelimit_storage_url
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return Check("redis", SKIP, "not configured (memory://: limits counted per process)")
    options = {}
    if scheme in {"redis", "rediss", "redis+unix"}:
        options = {"socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                   "socket_timeout": REDIS_TIMEOUT_SECONDS}
    try:
        reachable = storage_from_string(url, **options).check()
    except Exception as exc:  # a malformed URL or a missing client library
        return Check("redis", FAIL, f"OPTIN_RATELIMIT_STORAGE_URL: {_error(exc)}")
    location = urlsplit(url).hostname or scheme
    if not reachable:
        return Check("redis", FAIL, f"{location} does not answer PING (OPTIN_RATELIMIT_STORAGE_URL)")
    return Check("redis", OK, f"{location} answers")


def base_url(settings: Settings) -> Check:
    if urlsplit(settings.base_url).scheme == "https":
        return Check("base url", OK, settings.base_url)
    if settings.development:
        return Check("base url", OK, f"{settings.base_url} (http is fine in development)")
    return Check("base url", FAIL, f"OPTIN_BASE_URL is {settings.base_url}: links in mails "
                                   "must be https:// in production")


def secret_lengths(settings: Settings) -> Check:
    """Names the settings whose secrets are short; never shows one."""
    candidates: list[tuple[str, str | bytes | None]] = [
        ("OPTIN_SECRET_KEY", settings.secret_key),
        ("OPTIN_HASH_KEY", settings.hash_key),
        ("OPTIN_AC_WEBHOOK_SECRET", settings.ac_webhook_secret),
    ]
    candidates += [(f"OPTIN_ADMIN_TOKENS entry {name!r}", token)
                   for token, name in settings.admin_tokens.items()]
    short = [name for name, value in candidates
             if value is not None and len(value) < MIN_SECRET_LENGTH]
    if short:
        return Check("secrets", FAIL, f"shorter than {MIN_SECRET_LENGTH} characters: "
                                      f"{', '.join(short)} (make one with {GENERATE})")
    return Check("secrets", OK, f"all at least {MIN_SECRET_LENGTH} characters")


def admin_tokens(settings: Settings) -> Check:
    if not settings.admin_tokens:
        return Check("admin tokens", FAIL, "OPTIN_ADMIN_TOKENS is unset: the operator API "
                                           "refuses every call")
    return Check("admin tokens", OK, f"{len(settings.admin_tokens)} set "
                                     f"({', '.join(sorted(settings.admin_tokens.values()))})")


__all__ = ["FAIL", "OK", "SKIP", "Check", "failed", "redact", "run_all", "table"]
