"""A real local HTTP server that behaves like ActiveCampaign API v3 for what optin uses.

Tests talk to it over TCP with the real client, so timeouts, connection pools,
headers and status codes are exercised, not mocked. Bodies follow the shapes
in https://developers.activecampaign.com/reference; where the docs are silent
(marked "fake's choice") the behaviour is a plausible guess, kept simple.

    with FakeActiveCampaign(lists={1: "Newsletter"}) as ac:
        client = ActiveCampaignClient(ac.url, ac.api_key)
        ac.outage = True          # every request -> 503
        ac.delay = 0.5            # every answer comes 0.5 s late
        ac.fail_next(2, 500)      # the next two requests -> 500
        ac.add_contact("a@example.org", 1, status=2)  # "unsubscribed inside ActiveCampaign"
        assert ac.contact_status("a@example.org", 1) == 2
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_API_KEY = "fake-ac-key-7f3a9c2e5b8d4f61"
PREFIX = "/api/3/"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# 403 body: the docs only say a missing or wrong Api-Token gets 403; this body is the fake's choice.
FORBIDDEN = {"message": "No Result found for Subscriber with id 0"}
_INVALID_JSON = object()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _error(title: str, code: str, pointer: str, error: str = "") -> dict[str, Any]:
    """ActiveCampaign's 4xx validation envelope."""
    item = {"title": title, "detail": "", "code": code, "source": {"pointer": pointer}}
    if error:
        item["error"] = error
    return {"errors": [item]}


@dataclass
class RecordedRequest:
    """One request as the server saw it (``status`` is what it answered)."""

    method: str
    path: str  # full path without query, e.g. "/api/3/contacts"
    query: dict[str, list[str]]
    json: Any
    time: float
    api_token: str | None
    status: int = 0
    arrived: float = 0.0  # time.monotonic() when the request line came in

    @property
    def endpoint(self) -> str:
        """The path below /api/3/, e.g. "contact/sync"."""
        return self.path[len(PREFIX):] if self.path.startswith(PREFIX) else self.path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its load balancer
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def _serve(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeActiveCampaign


class FakeActiveCampaign:
    """ActiveCampaign in a thread: contacts, list statuses, bulk imports, lists, failures."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        lists: Mapping[int, str] | None = None,
        rate_limit: int | None = 5,
        bulk_imports_per_minute: int | None = 100,
    ) -> None:
        self.api_key = api_key
        self.rate_limit = rate_limit  # requests per sliding second, all clients; None = off
        self.bulk_imports_per_minute = bulk_imports_per_minute
        self.outage = False
        self.delay = 0.0
        self.requests: list[RecordedRequest] = []
        self.rate_limited = 0  # how many 429s were answered
        self._lock = threading.RLock()
        self._window: deque[float] = deque()
        self._import_times: deque[float] = deque()
        self._failures: deque[tuple[int, str | None]] = deque()
        self._ids = {kind: itertools.count(1) for kind in ("contact", "member", "field")}
        self._contacts: dict[str, dict[str, Any]] = {}  # id -> contact JSON + "_fields"
        self._by_email: dict[str, str] = {}
        self._members: dict[tuple[str, str], dict[str, Any]] = {}  # (contact, list) -> record
        self._lists: dict[str, dict[str, Any]] = {}
        self._imports: dict[str, dict[str, Any]] = {}
        for list_id, name in (lists if lists is not None else {1: "Newsletter", 2: "News"}).items():
            self.add_list(list_id, name)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> FakeActiveCampaign:
        """Listen on 127.0.0.1 at a free port, in a background thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeActiveCampaign:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The account URL, as ActiveCampaign shows it (the client appends /api/3/)."""
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- switches and helpers for tests -----------------------------------------

    def fail_next(self, n: int, status: int = 503, retry_after: str | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (and this Retry-After, if given)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * n)

    def requests_to(self, method: str, endpoint: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.endpoint == endpoint]

    def add_list(self, list_id: int | str, name: str) -> None:
        with self._lock:
            self._lists[str(list_id)] = {
                "id": str(list_id), "name": name, "stringid": re.sub(r"\W+", "-", name.lower()),
                "cdate": _now(), "userid": "1",
            }

    def add_contact(
        self, email: str, list_id: int | str | None = None, status: int = 1,
        first_name: str = "", last_name: str = "", *, subscribed_at: str | None = None,
        ip4_sub: str | None = None, unsubscribed_at: str | None = None,
        ip4_unsub: str | None = None, unsubreason: str | None = None,
    ) -> str:
        """Create (or find) a contact and set its list status, as if done inside ActiveCampaign.

        The membership's evidence can be given as ActiveCampaign reports it: ``sdate`` and
        ``udate`` as ``2016-08-15T12:04:26-05:00``, ``ip4Sub``/``ip4Unsub`` as the IPv4
        address in a number's digits (``"3325256711"``; ``"0"`` for none).
        """
        with self._lock:
            contact = self._upsert(email, {"firstName": first_name, "lastName": last_name})
            if list_id is not None:
                record = self._set_status(contact["id"], str(list_id), status)
                for key, value in (("sdate", subscribed_at), ("ip4Sub", ip4_sub),
                                   ("udate", unsubscribed_at), ("ip4Unsub", ip4_unsub),
                                   ("unsubreason", unsubreason)):
                    if value is not None:
                        record[key] = value
            return contact["id"]

    def contact(self, email: str) -> dict[str, Any] | None:
        """A copy of the stored contact (``fieldValues`` as a dict field id -> value), or None."""
        with self._lock:
            contact_id = self._by_email.get(email.strip().lower())
            if contact_id is None:
                return None
            stored = self._contacts[contact_id]
            return {**self._public(stored), "fieldValues": dict(stored["_fields"])}

    def contact_status(self, email: str, list_id: int | str) -> int | None:
        with self._lock:
            contact_id = self._by_email.get(email.strip().lower())
            record = self._members.get((contact_id or "", str(list_id)))
            return None if record is None else int(record["status"])

    def delete_contact(self, email: str) -> None:
        """Delete a contact and its list memberships, as an ActiveCampaign user can."""
        with self._lock:
            contact_id = self._by_email.pop(email.strip().lower())
            del self._contacts[contact_id]
            for key in [k for k in self._members if k[0] == contact_id]:
                del self._members[key]

    @property
    def contact_count(self) -> int:
        return len(self._contacts)

    # -- request handling -------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        arrived = time.monotonic()
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = _INVALID_JSON
        parts = urlsplit(handler.path)
        record = RecordedRequest(
            handler.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
            None if body is _INVALID_JSON else body, time.time(), handler.headers.get("Api-Token"),
            arrived=arrived,
        )
        with self._lock:
            self.requests.append(record)
        if self.delay:
            time.sleep(self.delay)
        status, payload, headers = self._answer(record, body)
        record.status = status
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def _answer(self, req: RecordedRequest, body: Any) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            wait = self._admit(req.arrived or time.monotonic())
            if wait is not None:
                self.rate_limited += 1
                return 429, {"message": "Too Many Requests"}, {"Retry-After": str(wait)}
            if self.outage:
                return 503, {"message": "Service Unavailable"}, {}
            if self._failures:
                status, retry_after = self._failures.popleft()
                if status == 429:
                    self.rate_limited += 1
                headers = {"Retry-After": retry_after} if retry_after else {}
                return status, {"message": f"Injected failure {status}"}, headers
            if req.api_token != self.api_key:
                return 403, FORBIDDEN, {}
            if body is _INVALID_JSON:
                return 400, {"message": "Malformed JSON body"}, {}
            if not req.path.startswith(PREFIX):
                return 404, {"message": "Not Found"}, {}
            try:
                status, payload = self._route(req.method, req.endpoint, req.query, body)
            except (TypeError, ValueError, KeyError, AttributeError):  # malformed input
                return 400, {"message": "Bad Request"}, {}
            return status, payload, {}

    def _admit(self, now: float) -> int | None:
        """Sliding one-second window over arrival times (a real API counts requests at
        its edge, not when a busy handler gets to them); None if admitted, else whole
        seconds to wait."""
        if not self.rate_limit:
            return None
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        if len(self._window) >= self.rate_limit:
            return max(1, math.ceil(self._window[0] + 1.0 - now))
        bisect.insort(self._window, now)  # threads may get here out of arrival order
        return None

    def _route(self, method: str, endpoint: str, query: dict[str, list[str]], body: Any):
        q = {key: values[-1] for key, values in query.items()}
        parts = endpoint.strip("/").split("/")
        match method, parts:
            case "POST", ["contact", "sync"]:
                return self._sync(body)
            case "POST", ["contactLists"]:
                return self._contact_list(body)
            case "GET", ["contacts"]:
                return self._list_contacts(q)
            case "GET", ["contacts", contact_id]:
                contact = self._contacts.get(contact_id)
                if contact is None:
                    return 404, {"message": f"No Result found for Subscriber with id {contact_id}"}
                return 200, {"contact": self._public(contact),
                             "contactLists": self._records_of([contact_id])}
            case "POST", ["import", "bulk_import"]:
                return self._bulk_import(body)
            case "GET", ["import", "info"]:
                if not q.get("batchId"):
                    return 400, {"success": 0, "message": "'batchId' is a required field."}
                info = self._imports.get(q["batchId"])
                if info is None:  # fake's choice
                    return 404, {"message": f"No Result found for batch with id {q['batchId']}"}
                return 200, info
            case "GET", ["lists"]:
                items = list(self._lists.values())
                return 200, {"lists": self._page(items, q), "meta": {"total": str(len(items))}}
            case "GET", ["lists", list_id]:
                if list_id not in self._lists:
                    return 404, {"message": f"No Result found for List with id {list_id}"}
                return 200, {"list": self._lists[list_id]}
        return 404, {"message": "Not Found"}

    # -- endpoints ----------------------------------------------------------------

    def _sync(self, body: Any):
        contact = body.get("contact") if isinstance(body, dict) else None
        if not isinstance(contact, dict) or not EMAIL.match(str(contact.get("email", ""))):
            return 422, _error("Contact Email Address is not valid.", "email_invalid",
                               "/data/attributes/email", "must_be_valid_email_address")
        created = contact["email"].strip().lower() not in self._by_email
        names = {k: contact[k] for k in ("firstName", "lastName", "phone") if k in contact}
        stored = self._upsert(contact["email"], names)
        for item in contact.get("fieldValues") or []:
            stored["_fields"][str(item.get("field"))] = item.get("value")
        field_values = [
            {"contact": stored["id"], "field": f, "value": v, "id": str(next(self._ids["field"]))}
            for f, v in stored["_fields"].items()
        ]
        return (201 if created else 200), {"fieldValues": field_values,
                                           "contact": self._public(stored)}

    def _contact_list(self, body: Any):
        item = body.get("contactList") if isinstance(body, dict) else None
        if not isinstance(item, dict):
            return 422, _error("contactList is required.", "required", "/data")  # fake's choice
        list_id, contact_id = str(item.get("list")), str(item.get("contact"))
        errors = []
        if list_id not in self._lists:
            errors += _error("The related list does not exist.", "related_missing",
                             "/data/attributes/list", "list_not_exist")["errors"]
        if contact_id not in self._contacts:
            errors += _error("The related contact does not exist.", "related_missing",
                             "/data/attributes/contact", "contact_not_exist")["errors"]
        try:
            status = int(item.get("status"))
        except (TypeError, ValueError):
            status = -1
        if status not in (1, 2):  # fake's choice of wording
            errors += _error("Status must be 1 or 2.", "invalid",
                             "/data/attributes/status")["errors"]
        if errors:
            return 422, {"errors": errors}
        created = (contact_id, list_id) not in self._members
        record = self._set_status(contact_id, list_id, status)
        # The docs' example answers with the status as a number here, as a string elsewhere.
        return (201 if created else 200), {
            "contacts": [self._public(self._contacts[contact_id])],
            "contactList": {**record, "status": status},
        }

    def _list_contacts(self, q: dict[str, str]):
        try:
            status = int(q.get("status", -1))
            id_greater = int(q.get("id_greater", 0))
        except ValueError:
            return 400, {"message": "Bad Request"}
        found = list(self._contacts.values())
        if "email" in q:
            found = [c for c in found if c["email"] == q["email"].strip().lower()]
        if "listid" in q:
            found = [c for c in found if (r := self._members.get((c["id"], q["listid"])))
                     and status in (-1, int(r["status"]))]
        elif status != -1:
            found = [c for c in found if any(int(r["status"]) == status
                                             for (cid, _), r in self._members.items()
                                             if cid == c["id"])]
        found = [c for c in found if int(c["id"]) > id_greater]
        found.sort(key=lambda c: int(c["id"]), reverse=q.get("orders[id]", "").upper() == "DESC")
        page = self._page(found, q)
        answer: dict[str, Any] = {"scoreValues": [], "contacts": [self._public(c) for c in page],
                                  "meta": {"total": str(len(found)), "page_input": q}}
        if "contactLists" in [part.split(".")[0] for part in q.get("include", "").split(",")]:
            records = self._records_of([c["id"] for c in page])
            answer["contactLists"] = records
            for contact in answer["contacts"]:
                contact["contactLists"] = [
                    r["id"] for r in records if r["contact"] == contact["id"]
                ]
        return 200, answer

    def _bulk_import(self, body: Any):
        contacts = body.get("contacts") if isinstance(body, dict) else None
        reasons: list[Any] = []
        if not isinstance(contacts, list) or not contacts:
            reasons = ["'contacts' is a required field."]
        elif len(contacts) > 250:  # the docs give the limit, not the answer: fake's choice
            reasons = ["Up to 250 contacts may be included in a single request."]
        else:
            reasons = [{"contact": i, "failureReason": "Field 'email' incorrect format"}
                       for i, c in enumerate(contacts)
                       if not isinstance(c, dict) or not EMAIL.match(str(c.get("email", "")))]
        if reasons:
            return 400, {"success": 0, "failureReasons": reasons, "message":
                         "JSON payload did not pass validation. Please fix failure Reasons and "
                         "retry. The import was not queued for processing."}
        now = time.monotonic()
        while self._import_times and self._import_times[0] <= now - 60:
            self._import_times.popleft()
        if self.bulk_imports_per_minute and len(self._import_times) >= self.bulk_imports_per_minute:
            return 400, {"success": 0, "message": "Rate limit exceeded.", "failureReasons": [
                "Up to 100 imports may be requested per minute.Please batch contacts into larger "
                "requests, or retry this request in a minute."]}
        self._import_times.append(now)
        succeeded, failed = [], []
        for item in contacts:  # applied at once; the real API queues and applies within minutes
            names = {"firstName": item["first_name"]} if "first_name" in item else {}
            if "last_name" in item:
                names["lastName"] = item["last_name"]
            lists = [str(s.get("listid"))
                     for s in (item.get("subscribe") or []) + (item.get("unsubscribe") or [])]
            if any(list_id not in self._lists for list_id in lists):
                failed.append(item["email"])
                continue
            stored = self._upsert(item["email"], names)
            for field in item.get("fields") or []:
                stored["_fields"][str(field.get("id"))] = field.get("value")
            for sub in item.get("subscribe") or []:
                record = self._members.get((stored["id"], str(sub["listid"])))
                # Docs: "Contacts may not be subscribed to lists which they have previously
                # unsubscribed from."
                if record is None or int(record["status"]) != 2:
                    self._set_status(stored["id"], str(sub["listid"]), 1)
            for unsub in item.get("unsubscribe") or []:
                self._set_status(stored["id"], str(unsub["listid"]), 2)
            succeeded.append(stored["id"])
        batch_id = str(uuid.uuid4())
        self._imports[batch_id] = {"status": "completed", "success": succeeded, "failure": failed}
        return 200, {"success": 1, "queued_contacts": len(contacts), "batchId": batch_id,
                     "message": "Contact import queued"}

    # -- store --------------------------------------------------------------------

    def _upsert(self, email: str, names: dict[str, Any]) -> dict[str, Any]:
        key = email.strip().lower()
        contact_id = self._by_email.get(key)
        if contact_id is None:
            contact_id = str(next(self._ids["contact"]))
            self._by_email[key] = contact_id
            self._contacts[contact_id] = {
                "id": contact_id, "email": key, "firstName": "", "lastName": "", "phone": "",
                "cdate": _now(), "udate": _now(), "_fields": {},
            }
        contact = self._contacts[contact_id]
        contact.update(names)
        contact["udate"] = _now()
        return contact

    def _set_status(self, contact_id: str, list_id: str, status: int) -> dict[str, Any]:
        record = self._members.get((contact_id, list_id))
        if record is None:
            # The membership record as the docs show it (contactLists of GET /contacts/{id}):
            # sdate/udate ISO 8601 with offset, IPv4s as numbers in strings, "0" for none.
            record = {"id": str(next(self._ids["member"])), "contact": contact_id,
                      "list": list_id, "form": None, "seriesid": "0", "sdate": _now(),
                      "udate": None, "responder": "1", "sync": "0", "unsubreason": "",
                      "campaign": None, "message": None, "first_name": "", "last_name": "",
                      "ip4Sub": "0", "sourceid": "0", "autosyncLog": None, "ip4_last": "0",
                      "ip4Unsub": "0", "unsubscribeAutomation": None}
            self._members[(contact_id, list_id)] = record
        record.update(status=str(status), udate=_now())
        return record

    def _records_of(self, contact_ids: list[str]) -> list[dict[str, Any]]:
        wanted = set(contact_ids)
        return [dict(r) for (cid, _), r in self._members.items() if cid in wanted]

    @staticmethod
    def _public(contact: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in contact.items() if not k.startswith("_")}

    @staticmethod
    def _page(items: list[Any], q: dict[str, str]) -> list[Any]:
        limit = min(max(int(q.get("limit", 20)), 1), 100)
        offset = max(int(q.get("offset", 0)), 0)
        return items[offset:offset + limit]
