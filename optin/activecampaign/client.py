"""ActiveCampaign API v3 client: the HTTP calls optin makes, nothing else.

Retries, backoff and rate limiting belong to the caller (the outbox and a
shared limiter plugged in as ``throttle``), so this client makes exactly one
HTTP request per call and turns every failure into one of a few exceptions
that say what the caller should do:

* :class:`TransientError` -- try again later (5xx, timeout, connection error);
  :class:`RateLimited` is a kind of it that carries ActiveCampaign's
  ``Retry-After``.
* :class:`PermanentError` -- retrying the same request cannot help (4xx);
  :class:`AuthError` is a kind of it for 401/403 (fix the key, then retry).

The API key is only ever sent in the ``Api-Token`` header. Error messages are
built here from ActiveCampaign's own title/detail, never from a ``requests``
exception (those carry URLs, and URLs carry e-mail addresses), and network
errors are raised ``from None`` so no traceback drags the original along.
Redirects are not followed: ``requests`` only strips ``Authorization`` on a
cross-host redirect, not a custom header such as ``Api-Token``.

Reference: https://developers.activecampaign.com/reference
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

#: Contact-list statuses as ActiveCampaign reports them.
STATUS_UNCONFIRMED, STATUS_ACTIVE, STATUS_UNSUBSCRIBED, STATUS_BOUNCED = 0, 1, 2, 3
BULK_IMPORT_MAX = 250  # contacts per POST import/bulk_import
PAGE_MAX = 100  # largest ``limit`` a collection endpoint accepts
# Bulk import allows 100 calls a minute; past it a 400 says "retry this request in a minute".
BULK_IMPORTS_PER_MINUTE = 100
BULK_RATE_LIMIT_WAIT = 60.0
POOL_SIZE = 10
_TEXT_MAX = 500


class ActiveCampaignError(Exception):
    """A call failed; ``status``/``title``/``detail``/``code`` are ActiveCampaign's own words."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        title: str | None = None,
        detail: str | None = None,
        code: str | None = None,
        errors: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
        self.errors = errors or []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, status={self.status!r})"


class TransientError(ActiveCampaignError):
    """Try again later: 5xx, timeout, connection error. ``retry_after`` if the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(TransientError):
    """429 (or bulk import's "Rate limit exceeded" 400): wait ``retry_after`` seconds."""


class PermanentError(ActiveCampaignError):
    """Retrying the same request cannot help: invalid address, unknown list, bad payload."""


class AuthError(PermanentError):
    """401/403: the API key is wrong or lacks permission; every call will fail until fixed."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _api_root(base_url: str) -> str:
    """``https://acct.api-us1.com`` or ``…/api/3`` (with or without slash) -> ``…/api/3/``."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("ActiveCampaign URL must look like https://<account>.api-us1.com")
    root = base_url.strip().rstrip("/")
    if not root.endswith("/api/3"):
        root += "/api/3"
    return root + "/"


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class ActiveCampaignClient:
    """One account's API v3: contacts, list statuses, bulk import, lists.

    ``throttle`` is called before every HTTP request (plug the shared 5 req/s
    account limiter in there); ``on_response(template, status)`` after every
    response, e.g. ``("POST contact/sync", 201)``, with status 0 when no
    response came (timeout, connection error) -- for Prometheus counters.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: tuple[float, float] = (3.05, 10),
        session: requests.Session | None = None,
        throttle: Callable[[], None] | None = None,
        on_response: Callable[[str, int], None] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("ActiveCampaign API key is empty")
        self._root = _api_root(base_url)
        self._api_key = api_key
        self._headers = {"Api-Token": api_key, "Accept": "application/json"}
        self._timeout = timeout
        self._throttle = throttle
        self._on_response = on_response
        self._own_session = session is None
        if session is None:
            session = requests.Session()
            # No urllib3 retries: one call is one request; the outbox decides about retrying.
            adapter = HTTPAdapter(pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self._session = session

    def __repr__(self) -> str:
        return f"ActiveCampaignClient({self._root!r})"

    def close(self) -> None:
        """Close the connection pool if this client created it."""
        if self._own_session:
            self._session.close()

    def __enter__(self) -> ActiveCampaignClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- contacts -------------------------------------------------------------

    def sync_contact(
        self,
        email: str,
        first_name: str | None = None,
        last_name: str | None = None,
        field_values: Mapping[str, str] | Mapping[int, str] | None = None,
    ) -> dict[str, Any]:
        """Create or update the contact with this address (upsert by e-mail); return it.

        None leaves a name unchanged; ``field_values`` maps custom field id -> value.
        Safe to repeat, so a retry after a timeout cannot create a duplicate.
        """
        contact: dict[str, Any] = {"email": email}
        if first_name is not None:
            contact["firstName"] = first_name
        if last_name is not None:
            contact["lastName"] = last_name
        if field_values:
            contact["fieldValues"] = [
                {"field": str(field), "value": value} for field, value in field_values.items()
            ]
        data = self._call("POST", "contact/sync", "POST contact/sync", json={"contact": contact})
        return self._member(data, "contact", "POST contact/sync")

    def set_list_status(self, contact_id: str | int, list_id: str | int, status: int) -> dict:
        """Set the contact's status on a list: 1 subscribed, 2 unsubscribed; return the contactList.

        Status 1 re-subscribes someone who unsubscribed in ActiveCampaign: only
        send it for a fresh confirmed consent.
        """
        if status not in (STATUS_ACTIVE, STATUS_UNSUBSCRIBED):
            raise ValueError("list status must be 1 (subscribed) or 2 (unsubscribed)")
        body = {"contactList": {"list": list_id, "contact": contact_id, "status": status}}
        data = self._call("POST", "contactLists", "POST contactLists", json=body)
        return self._member(data, "contactList", "POST contactLists")

    def find_contact(self, email: str) -> dict[str, Any] | None:
        """The contact with exactly this address (case-insensitive), or None."""
        data = self._call("GET", "contacts", "GET contacts", params={"email": email})
        contacts = data.get("contacts") or []
        wanted = email.strip().lower()
        for contact in contacts:
            if str(contact.get("email", "")).lower() == wanted:
                return contact
        return None

    def list_members(
        self, list_id: str | int, status: int | None = None, page_size: int = PAGE_MAX
    ) -> Iterator[dict[str, Any]]:
        """Every contact on a list (optionally only those with ``status``), lazily, page by page.

        Each contact dict gains ``listStatus`` (int: 0 unconfirmed, 1 active,
        2 unsubscribed, 3 bounced -- its status on *this* list) and
        ``contactList`` (ActiveCampaign's membership record: sdate, udate,
        unsubreason, ..., or None). They come from ``include=contactLists``,
        which sideloads the page's membership records for all lists; the one
        whose ``list`` is ``list_id`` is picked. Pages are ordered by id and
        walked with ``offset`` until ``meta.total``. HTTP errors are raised
        while iterating.
        """
        if not 1 <= page_size <= PAGE_MAX:
            raise ValueError(f"page_size must be between 1 and {PAGE_MAX}")
        wanted = str(list_id)
        params: dict[str, Any] = {"listid": wanted, "include": "contactLists", "orders[id]": "ASC"}
        if status is not None:
            params["status"] = int(status)
        for data in self._pages("contacts", "GET contacts", "contacts", params, page_size):
            records = {
                str(record.get("contact")): record
                for record in data.get("contactLists") or []
                if str(record.get("list")) == wanted
            }
            for contact in data.get("contacts") or []:
                record = records.get(str(contact.get("id")))
                contact["contactList"] = record
                contact["listStatus"] = (
                    _int_or_none(record.get("status")) if record is not None else status
                )
                yield contact

    def member_count(self, list_id: str | int) -> int:
        """How many contacts the list has (all statuses): ``meta.total`` of a one-item page."""
        data = self._call("GET", "contacts", "GET contacts",
                          params={"listid": str(list_id), "limit": 1, "offset": 0})
        return _int_or_none((data.get("meta") or {}).get("total")) or 0

    # -- bulk import ----------------------------------------------------------

    def bulk_import(self, contacts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Queue up to 250 contacts in one call; return ``{success, queued_contacts, batchId}``.

        Contacts use snake_case: ``email``, ``first_name``, ``last_name``,
        ``subscribe``/``unsubscribe`` (``[{"listid": …}]``), ``fields``
        (``[{"id": …, "value": …}]``). ActiveCampaign will not re-subscribe a
        contact who unsubscribed from a list. A payload it rejects (400 with
        ``failureReasons``) raises PermanentError; nothing was queued then.
        """
        if not contacts:
            raise ValueError("bulk_import needs at least one contact")
        if len(contacts) > BULK_IMPORT_MAX:
            raise ValueError(f"bulk_import takes at most {BULK_IMPORT_MAX} contacts a call")
        if any(not isinstance(c, Mapping) or not c.get("email") for c in contacts):
            raise ValueError("every bulk_import contact needs an email")
        body = {"contacts": [dict(c) for c in contacts]}
        data = self._call("POST", "import/bulk_import", "POST import/bulk_import", json=body)
        if "success" not in data and "Success" in data:  # the docs' example spells it "Success"
            data["success"] = data["Success"]
        if not data.get("batchId"):
            raise ActiveCampaignError(
                "ActiveCampaign POST import/bulk_import answered without a batchId"
            )
        return data

    def bulk_import_info(self, batch_id: str) -> dict[str, Any]:
        """Progress of a bulk import: ``{"status", "success": [contact ids], "failure": [...]}``."""
        return self._call("GET", "import/info", "GET import/info", params={"batchId": batch_id})

    # -- lists ----------------------------------------------------------------

    def get_list(self, list_id: str | int) -> dict[str, Any] | None:
        """The list, or None if ActiveCampaign has no list with this id."""
        data = self._call("GET", f"lists/{list_id}", "GET lists/{id}", not_found_ok=True)
        return None if data is None else self._member(data, "list", "GET lists/{id}")

    def lists(self) -> Iterator[dict[str, Any]]:
        """Every list in the account, lazily, page by page."""
        for data in self._pages("lists", "GET lists", "lists", {}, PAGE_MAX):
            yield from data.get("lists") or []

    # -- plumbing -------------------------------------------------------------

    def _pages(
        self, path: str, template: str, key: str, params: dict[str, Any], page_size: int
    ) -> Iterator[dict[str, Any]]:
        """Walk a collection with limit/offset until ``meta.total`` (or a short page)."""
        offset = 0
        while True:
            data = self._call(
                "GET", path, template, params={**params, "limit": page_size, "offset": offset}
            )
            yield data
            got = len(data.get(key) or [])
            offset += got
            total = _int_or_none((data.get("meta") or {}).get("total"))
            if got == 0 or (offset >= total if total is not None else got < page_size):
                return

    @staticmethod
    def _member(data: dict[str, Any], key: str, template: str) -> dict[str, Any]:
        value = data.get(key)
        if not isinstance(value, dict):
            raise ActiveCampaignError(f"ActiveCampaign {template} answered without {key!r}")
        return value

    def _call(
        self,
        method: str,
        path: str,
        template: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        not_found_ok: bool = False,
    ) -> Any:
        """One HTTP request; the decoded JSON body, None for an allowed 404, or an exception."""
        if self._throttle is not None:
            self._throttle()
        started = time.monotonic()
        try:
            response = self._session.request(
                method, self._root + path, params=params, json=json, headers=self._headers,
                timeout=self._timeout, allow_redirects=False,
            )
        except requests.Timeout as exc:
            self._observe(method, path, template, 0, started)
            kind = "connect" if isinstance(exc, requests.ConnectTimeout) else "read"
            raise TransientError(f"ActiveCampaign {template}: {kind} timed out") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader) as exc:
            self._observe(method, path, template, 0, started)
            raise PermanentError(
                f"ActiveCampaign {template}: invalid request ({type(exc).__name__})"
            ) from None
        except requests.RequestException as exc:
            self._observe(method, path, template, 0, started)
            raise TransientError(
                f"ActiveCampaign {template}: no response ({type(exc).__name__})"
            ) from None
        status = response.status_code
        self._observe(method, path, template, status, started)
        if 200 <= status < 300:
            if not response.content:
                return {}
            try:
                return response.json()
            except ValueError:
                raise TransientError(
                    f"ActiveCampaign {template} answered {status} with a body that is not JSON",
                    status=status,
                ) from None
        if status == 404 and not_found_ok:
            return None
        raise self._error(response, template)

    def _observe(self, method: str, path: str, template: str, status: int, started: float) -> None:
        """Debug log (path only: ids, never a query string) and the metrics hook."""
        log.debug("ActiveCampaign %s %s -> %s in %.1f ms",
                  method, path, status or "no response", (time.monotonic() - started) * 1000)
        if self._on_response is not None:
            try:
                self._on_response(template, status)
            except Exception:  # a metrics hook must not turn a good call into a failure
                log.warning("ActiveCampaign on_response hook failed", exc_info=True)

    def _clean(self, value: Any) -> str | None:
        """ActiveCampaign's text, shortened, with the key blanked out should it ever echo it."""
        if value is None or value == "":
            return None
        text = str(value).replace(self._api_key, "[redacted]")
        return text if len(text) <= _TEXT_MAX else text[:_TEXT_MAX] + "…"

    def _error(self, response: requests.Response, template: str) -> ActiveCampaignError:
        """Map an error response to the exception that tells the caller what to do."""
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        title = detail = code = None
        errors: list[Any] = []
        if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
            errors = body["errors"]
            first = errors[0] if isinstance(errors[0], dict) else {"title": errors[0]}
            title, detail = first.get("title"), first.get("detail")
            code = first.get("code") or first.get("error")
        elif isinstance(body, dict) and isinstance(body.get("failureReasons"), list):
            errors = body["failureReasons"]
            title = body.get("message")
            detail = "; ".join(
                f"contact {r.get('contact')}: {r.get('failureReason')}" if isinstance(r, dict)
                else str(r)
                for r in errors[:5]
            )
        elif isinstance(body, dict) and body.get("message"):
            title = body["message"]
        else:
            title = response.reason
        title, detail, code = self._clean(title), self._clean(detail), self._clean(code)
        message = f"ActiveCampaign {template} answered {status}"
        message += "".join(
            part for part in (
                f": {title}" if title else "",
                f" ({detail})" if detail else "",
                f" [{code}]" if code else "",
            )
        )
        kw: dict[str, Any] = {
            "status": status, "title": title, "detail": detail, "code": code, "errors": errors,
        }
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429:
            return RateLimited(message, retry_after=retry_after, **kw)
        if (
            status == 400
            and template == "POST import/bulk_import"
            and "rate limit" in f"{title} {detail}".lower()
        ):
            wait = retry_after if retry_after is not None else BULK_RATE_LIMIT_WAIT
            return RateLimited(message, retry_after=wait, **kw)
        if status >= 500 or status == 408:
            return TransientError(message, retry_after=retry_after, **kw)
        if status in (401, 403):
            return AuthError(message, **kw)
        return PermanentError(message, **kw)
