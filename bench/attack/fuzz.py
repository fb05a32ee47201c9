"""Hostile bytes at every public route and the webhook; print every 5xx and odd answer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import ADMIN, HOOK_SECRET, HOOK_VALUES, WEB, http, status_of  # noqa: E402

bad: list[str] = []
n = 0


def check(label: str, r) -> None:
    global n
    n += 1
    if r.status_code >= 500:
        bad.append(f"{r.status_code} {label}: {r.text[:200]!r}")


NASTY_STR = [
    "a\x00b",
    "\x01\x07\x1b[31m",
    "A\ud800B",
    "\udfff",
    "x" * 100_000,
    "\u202e\u200b",
    "\ufeff",
    "\U0001f600" * 300,
    "%00",
    "' OR 1=1 --",
    "<script>",
    "\r\nBcc: x@y.org",
]
JSON_ESC = ['"A\\ud800B"', '"\\u0000"', '"\\udc00\\ud800"', '"x\\u001fy"']
FIELDS = [
    "email",
    "list",
    "locale",
    "first_name",
    "last_name",
    "source_url",
    "redirect_url",
    "website",
    "consent_text_version",
]
base = {"email": "fz@example.org", "list": "newsletter", "consent_text_version": 1, "locale": "de"}

# JSON bodies with each nasty value in each field, and in fields{}
for f in FIELDS:
    for v in NASTY_STR + [None, 1, 1.5, -1, 10**400, [], {}, True, "1e999"]:
        body = dict(base, **{f: v})
        try:
            data = json.dumps(body, ensure_ascii=True)  # lone surrogates become \ud800 escapes
        except (ValueError, OverflowError):
            continue
        check(
            f"json {f}={v!r:.40}",
            http.post(WEB + "/v1/subscriptions", data=data, headers={"Content-Type": "application/json"}),
        )
    for esc in JSON_ESC:
        raw = json.dumps(dict(base)).replace('"de"', '"de"')
        raw = (
            raw[:-1] + f', "{f}": {esc}' + "}" if f not in base else raw.replace(json.dumps(base[f]), esc, 1)
        )
        check(
            f"json-escape {f}={esc}",
            http.post(WEB + "/v1/subscriptions", data=raw, headers={"Content-Type": "application/json"}),
        )
for key in ["a\x00", "\ud800", "k" * 70, "ok"]:
    for v in NASTY_STR + [1, None, [1], {"a": 1}]:
        check(
            f"fields {key!r:.20}={v!r:.30}",
            http.post(
                WEB + "/v1/subscriptions",
                data=json.dumps(dict(base, fields={key: v})),
                headers={"Content-Type": "application/json"},
            ),
        )
check(
    "fields many",
    http.post(WEB + "/v1/subscriptions", json=dict(base, fields={f"k{i}": "v" for i in range(5000)})),
)

# deep / huge / odd JSON
for raw in [
    "[" * 5000 + "]" * 5000,
    '{"a":' * 10000 + "1" + "}" * 10000,
    "",
    "null",
    "1",
    '"x"',
    "\ufeff{}",
    '{"email": "a@b.org"',
    "{" + ",".join(f'"k{i}":1' for i in range(200000)) + "}",
    json.dumps(dict(base, email="x@example.org")) * 2,
    "NaN",
    '{"consent_text_version": NaN}',
    '{"consent_text_version": Infinity, "email":"a@example.org","list":"newsletter"}',
]:
    check(
        f"json raw {raw[:30]!r}",
        http.post(
            WEB + "/v1/subscriptions",
            data=raw.encode("utf-8", "surrogatepass"),
            headers={"Content-Type": "application/json"},
        ),
    )
for ct in [
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/json; charset=bogus",
    "application/vnd.api+json",
    "text/plain",
    "application/x-www-form-urlencoded; charset=utf-16",
    "multipart/form-data",
    "multipart/form-data; boundary=xx",
    "application/xml",
    "*/*",
    "",
    "a" * 5000,
]:
    check(
        f"ct {ct[:40]}",
        http.post(WEB + "/v1/subscriptions", data=json.dumps(base).encode(), headers={"Content-Type": ct}),
    )
check(
    "json utf16",
    http.post(
        WEB + "/v1/subscriptions",
        data=json.dumps(base).encode("utf-16"),
        headers={"Content-Type": "application/json"},
    ),
)
check(
    "json latin1 bytes",
    http.post(
        WEB + "/v1/subscriptions",
        data=json.dumps(dict(base, first_name="Jörg"), ensure_ascii=False).encode("latin-1"),
        headers={"Content-Type": "application/json"},
    ),
)
check(
    "gzip claimed",
    http.post(
        WEB + "/v1/subscriptions",
        data=b"\x1f\x8b garbage",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    ),
)
check(
    "huge body",
    http.post(
        WEB + "/v1/subscriptions",
        data=b"{" + b" " * 30_000_000 + b"}",
        headers={"Content-Type": "application/json"},
    ),
)

# forms: raw bytes, invalid UTF-8, NUL, surrogate encoded as UTF-8 (CESU)
FORM_VALS = [b"a%00b", b"%FF%FE", b"%ED%A0%80", b"%C0%80", b"%E2%80%AE", b"x" * 200_000, b"%0D%0A"]
for f in [
    "email",
    "list",
    "first_name",
    "source_url",
    "redirect_url",
    "locale",
    "website",
    "consent_text_version",
    "fields%5Bcompany%5D",
    "fields%5B%00%5D",
    "fields%5B%FF%5D",
]:
    for v in FORM_VALS:
        parts = {"email": b"fz2@example.org", "list": b"newsletter", "consent_text_version": b"1"}
        parts[f] = v
        body = b"&".join(k.encode() + b"=" + val for k, val in parts.items())
        check(
            f"form {f}={v[:20]!r}",
            http.post(
                WEB + "/v1/subscriptions",
                data=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
        )
# multipart
if True:  # multipart
    r = http.post(
        WEB + "/v1/subscriptions",
        files={
            "email": (None, "mp@example.org"),
            "list": (None, "newsletter"),
            "consent_text_version": (None, "1"),
            "first_name": ("f.txt", b"\x00\xff" * 1000),
        },
    )
    check("multipart", r)
check(
    "multipart broken",
    http.post(
        WEB + "/v1/subscriptions",
        data=b'--x\r\nContent-Disposition: form-data; name="email"\r\n\r\na@b\x00',
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    ),
)

# link routes
TOKENS = [
    "x",
    "a" * 5000,
    "WzEsIm%00",
    "%FF%FE",
    "%ED%A0%80",
    "..%2F..%2Fetc",
    "WzEsImY5Y2FhZjBjODhjNTE4MGEiLDFd.aw6p5A.AAAA",
    "WzkyMjMzNzIwMzY4NTQ3NzU4MDcsIngiLDFd.aw6p5A.AAAA",
    "W1tdXQ.aw6p5A.AAAA",
    "bnVsbA.x.y",
]
for t in TOKENS:
    for m, path in [
        ("GET", "/confirm/"),
        ("POST", "/confirm/"),
        ("GET", "/unsubscribe/"),
        ("POST", "/unsubscribe/"),
    ]:
        check(f"{m} {path}{t[:30]}", http.request(m, WEB + path + t, timeout=30))
        check(
            f"{m} {path}{t[:30]} one-click",
            http.request(
                m,
                WEB + path + t,
                data=b"List-Unsubscribe=One-Click%00",
                timeout=30,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
        )
    check(f"resend {t[:30]}", http.post(WEB + "/confirm/" + t + "/resend", timeout=30))
for q in [
    "list=%00",
    "list=%FF",
    "locale=%00",
    "locale=" + "x" * 10000,
    "list=" + "a" * 100000,
    "list=%ED%A0%80",
]:
    for p in ["/thanks", "/", "/brand.css", "/healthz", "/readyz", "/metrics", "/embed.js", "/openapi.json"]:
        check(f"GET {p}?{q[:20]}", http.get(WEB + p + "?" + q, timeout=30))
for h in [
    {"X-Forwarded-For": "\x00"},
    {"X-Forwarded-For": "A" * 5000},
    {"X-Forwarded-For": "1.2.3.4, ::ffff:1.2.3.4%eth0"},
    {"X-Forwarded-For": "fe80::1%25" + "x" * 40},
    {"X-Request-ID": "a" * 200},
    {"X-Request-ID": "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")},
    {"User-Agent": "\x00" * 600},
    {"User-Agent": "ü" * 1000},
    {"Accept-Language": "\xff" * 100},
    {"Origin": "\x00"},
    {"Origin": "http://" + "a" * 5000},
    {"Accept": "text/html;q=\x00"},
]:
    try:
        check(
            f"hdr {list(h)[0]}={list(h.values())[0][:20]!r}",
            http.post(
                WEB + "/v1/subscriptions", json=dict(base, email="hdr@example.org"), headers=h, timeout=30
            ),
        )
    except Exception as exc:  # noqa: BLE001
        bad.append(f"client refused header {h!r:.60}: {exc}")

# webhook
HOOK_FIELDS = [
    "type",
    "date_time",
    "initiated_by",
    "initiated_from",
    "list",
    "contact[id]",
    "contact[email]",
    "campaign[id]",
    "unsubscribe[reason]",
    "bounce[type]",
    "bounce[code]",
    "bounce[description]",
]
for typ in [b"unsubscribe", b"bounce", b"spam"]:
    for f in HOOK_FIELDS:
        for v in HOOK_VALUES:
            parts = {
                "type": typ,
                "list": b"1",
                "contact[email]": b"hookfz@example.org",
                "date_time": b"2026-05-02T08:41:07-05:00",
            }
            parts[f] = v
            body = b"&".join(
                k.replace("[", "%5B").replace("]", "%5D").encode() + b"=" + val for k, val in parts.items()
            )
            check(
                f"hook {typ!r} {f}={v[:20]!r}",
                http.post(
                    WEB + "/webhooks/activecampaign",
                    params={"secret": HOOK_SECRET},
                    data=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                    timeout=30,
                ),
            )
for ct, body in [
    ("application/json", b'{"type":"unsubscribe"}'),
    ("multipart/form-data; boundary=x", b"--x--"),
    ("text/plain", b"\x00"),
    ("application/x-www-form-urlencoded", b"%" * 1000),
]:
    check(
        f"hook ct {ct}",
        http.post(
            WEB + "/webhooks/activecampaign",
            params={"secret": HOOK_SECRET},
            data=body,
            headers={"Content-Type": ct},
        ),
    )
for s in ["\x00", "\xff", "x" * 10000]:
    check(
        f"hook secret {s[:10]!r}",
        http.post(
            WEB + "/webhooks/activecampaign",
            params={"secret": s},
            data={"type": "unsubscribe", "contact[email]": "a@example.org"},
        ),
    )

# operator API with hostile query values
for path in [
    "/v1/contacts",
    "/v1/contacts/subscriptions",
    "/v1/contacts/proof",
    "/v1/contacts/receipt",
    "/v1/lists/%00",
    "/v1/lists/%FF/consent-texts",
    "/v1/outbox",
    "/v1/retention/runs",
    "/v1/stats",
    "/v1/outbox/99999999999999999999/retry",
]:
    for q in [
        "email=a%00b@example.org&list=newsletter",
        "email=%ED%A0%80@x.org&list=%00",
        "email=a@example.org&list=newsletter&format=%00",
        "limit=%00&after=%FF",
        "limit=-1&cursor=%00",
        "email=" + "a" * 10000 + "&list=newsletter",
        "status=%00&kind=\x01",
    ]:
        for m in ["GET", "DELETE"] if path == "/v1/contacts" else ["POST"] if "retry" in path else ["GET"]:
            check(f"{m} {path}?{q[:30]}", http.request(m, WEB + path + "?" + q, headers=ADMIN, timeout=30))

print(f"{n} requests, {len(bad)} problems")
for b in bad:
    print(b)
print("hookfz:", status_of("hookfz@example.org"))
