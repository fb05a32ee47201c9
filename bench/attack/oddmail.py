"""Signups whose name or address is odd: does each 202 get a well-formed mail, or a dead letter?"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import SMTP_LOG, engine, signup  # noqa: E402

RUN = str(int(time.time()))
names = {
    "u2028": "Anna\u2028Bcc: evil@example.net",
    "nel": "Anna\x85Bcc: evil@example.net",
    "u2029": "Anna\u2029X-Evil: 1",
    "quote": 'Anna" <evil@example.net>, "x',
    "enc": "=?utf-8?q?evil=40example.net?=",
    "long": "W" * 200,
    "semi": "a;b,c:d@e",
    "bidi": "\u202egro.elpmaxe@live",
}
for key, name in names.items():
    r = signup(f"name-{key}-{RUN}@example.org", ip="192.0.2.10", first_name=name, last_name=name)
    print(key, r.status_code, r.text[:100] if r.status_code != 202 else "")
addrs = [
    '"a b"@example.org',
    "a@[127.0.0.1]",
    "a@localhost",
    "a@example",
    "a@" + "l" * 64 + ".org",
    "a@" + ".".join(["x" * 60] * 5) + ".org",
    "a..b@example.org",
    ".a@example.org",
    "a@-example.org",
    "a@example.org.",
    "a+tag@example.org",
    "a@e_xample.org",
    "a@123.123.123.123",
    "a@xn--.org",
    "a@example.o",
    "a@example.123",
    "a@ex\u00adample.org",
    "a@exa\u200bmple.org",
]
ok = []
for a in addrs:
    r = signup(a.replace("a@", f"x{RUN}@", 1) if a.startswith("a@") else a, ip="192.0.2.11")
    print(repr(a)[:60], r.status_code)
    if r.status_code == 202:
        ok.append(a)
time.sleep(15)
with engine.connect() as c:
    rows = c.execute(
        sa.text(
            "select o.id, o.status, o.attempts, left(o.last_error, 150), s.email from outbox o "
            "join subscription s on s.id=o.subscription_id where o.status <> 'done'"
        )
    ).all()
for row in rows:
    print("NOT DONE", row)
log = SMTP_LOG.read_text(errors="replace")
for key in names:
    i = log.find(f"name-{key}-{RUN}")
    print(key, "->", repr(log[max(0, i - 300) : i + 60]) if i >= 0 else "no mail")
