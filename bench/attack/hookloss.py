"""Hostile webhook values against confirmed addresses: a 2xx must always leave the subscription withdrawn.

fuzz.py sends the same values for an address that was never subscribed, so it can find 5xx but
not a lost withdrawal. A bounce is only checked for 5xx: it is recorded, not
a withdrawal. Here each (type, field, value) gets its own confirmed address.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import HOOK_SECRET, HOOK_VALUES, WEB, http, links, mails_to, signup, status_of  # noqa: E402


def confirmed(addr: str) -> str:
    """Sign ADDR up and click its link (state.py's helper; importing state.py would run it)."""
    r = signup(addr, ip="198.51.100.1", first_name="Anna")
    assert r.status_code == 202, r.text
    deadline = time.time() + 60
    while not mails_to(addr) and time.time() < deadline:
        time.sleep(0.5)
    link = [u for u in links(mails_to(addr)[0]) if "/confirm/" in u][0]
    r = http.post(link, headers={"X-Forwarded-For": "198.51.100.1"})
    assert r.status_code == 200, r.status_code
    return addr


RUN = str(int(time.time()))
FIELDS = [
    "date_time",
    "initiated_by",
    "initiated_from",
    "contact[id]",
    "campaign[id]",
    "unsubscribe[reason]",
    "bounce[type]",
    "bounce[code]",
    "bounce[description]",
]
VALS = [*HOOK_VALUES, b"", b"%E2%80%AE"]
cases = [(t, f, v) for t in [b"unsubscribe", b"bounce", b"spam"] for f in FIELDS for v in VALS]
n = 0
out: list[str] = []


def one(i: int) -> None:
    global n
    typ, f, v = cases[i]
    a = confirmed(f"hl{i}-{RUN}@example.org")
    parts = {
        "type": typ,
        "list": b"1",
        "contact[email]": a.encode(),
        "date_time": b"2026-05-02T08:41:07-05:00",
    }
    if typ == b"bounce":
        parts["bounce[type]"] = b"hard"
    parts[f] = v
    body = b"&".join(
        k.replace("[", "%5B").replace("]", "%5D").encode() + b"=" + val for k, val in parts.items()
    )
    r = http.post(
        WEB + "/webhooks/activecampaign",
        params={"secret": HOOK_SECRET},
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    n += 3
    st = status_of(a)
    if r.status_code >= 500:
        out.append(f"5xx {r.status_code} {typ!r} {f}={v[:20]!r}")
    elif r.status_code < 300 and st[-1][1] == "confirmed" and typ != b"bounce":
        # a bounce is recorded, not a withdrawal (sync.record_withdrawal's docstring)
        out.append(f"LOST {r.status_code} {typ!r} {f}={v[:20]!r} {st}")
    elif r.status_code >= 300:
        out.append(f"refused {r.status_code} {typ!r} {f}={v[:20]!r}: {r.text[:120]!r} status={st[-1][1]}")


with ThreadPoolExecutor(6) as ex:
    list(ex.map(one, range(len(cases))))
print(f"{len(cases)} cases, ~{n} requests")
for line in out:
    print(line)
