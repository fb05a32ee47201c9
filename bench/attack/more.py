"""Multipart one-click, erase then old links, resend spam, SMTP outage mid-burst."""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import ADMIN, WEB, engine, http, links, mails, mails_to, signup, status_of  # noqa: E402

RUN = str(int(time.time()))


def wait_mails(addr: str, n: int, timeout: float = 30) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline and len(mails_to(addr)) < n:
        time.sleep(0.5)
    return mails_to(addr)


def link(msg, kind: str) -> str:
    return [u for u in links(msg) if f"/{kind}/" in u][0]


def confirmed(addr: str) -> list:
    signup(addr, ip="192.0.2.70")
    m = wait_mails(addr, 1)[0]
    http.post(link(m, "confirm"))
    return wait_mails(addr, 2)


# multipart one-click
a = f"mp1-{RUN}@example.org"
ms = confirmed(a)
r = http.post(link(ms[1], "unsubscribe"), files={"List-Unsubscribe": (None, "One-Click")})
print("multipart one-click:", r.status_code, status_of(a))
# one-click on the unsubscribe link of the *confirmation* mail while still pending
a = f"pend1-{RUN}@example.org"
signup(a, ip="192.0.2.71")
m = wait_mails(a, 1)[0]
u = [x for x in links(m) if "/unsubscribe/" in x]
if u:
    r = http.post(u[0], data={"List-Unsubscribe": "One-Click"})
    print("one-click from confirm mail:", r.status_code, status_of(a))
    r = http.post(link(m, "confirm"))
    print("confirm after that:", r.status_code, status_of(a))
# erase, then old links and proof
a = f"erase-{RUN}@example.org"
ms = confirmed(a)
r = http.delete(WEB + "/v1/contacts", params={"email": a}, headers=ADMIN)
print("erase:", r.status_code, r.text[:150])
for kind, msg in (("confirm", ms[0]), ("unsubscribe", ms[1])):
    for m in ("GET", "POST"):
        rr = http.request(m, link(msg, kind))
        print(f"after erase {m} {kind}:", rr.status_code)
r = http.get(WEB + "/v1/contacts/proof", params={"email": a, "list": "newsletter"}, headers=ADMIN)
print("proof after erase:", r.status_code, r.text[:200])
with engine.connect() as c:
    print("rows after erase:", list(c.execute(sa.text(
        "select id, status, email, erased_at is not null from subscription where email_hash in "
        "(select email_hash from subscription where id=(select max(id) from subscription))"))))
# resend spam
a = f"resend-{RUN}@example.org"
signup(a, ip="192.0.2.72")
m = wait_mails(a, 1)[0]
codes = collections.Counter(http.post(link(m, "confirm") + "/resend").status_code for _ in range(30))
time.sleep(8)
print("30 resends:", codes, "mails now:", len(mails_to(a)))
# SMTP outage mid-burst
n_before = len(mails())
smtp_pid = int(Path("/tmp/attack/smtp.pid").read_text())
answers = {}


def one(i: int) -> None:
    addr = f"outage-{RUN}-{i}@example.org"
    answers[addr] = signup(addr, ip=f"10.8.0.{i % 250 + 1}").status_code


with ThreadPoolExecutor(4) as pool:
    list(pool.map(one, range(50)))
    os.killpg(smtp_pid, signal.SIGKILL)
    print("SMTP sink killed")
    list(pool.map(one, range(50, 150)))
time.sleep(8)
port = Path("/tmp/attack/smtp.port").read_text().strip()
out = open("/tmp/attack/smtp.log", "ab")  # noqa: SIM115
p = subprocess.Popen(["/tmp/venv-review/bin/python", "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"],
                     stdout=out, stderr=out, start_new_session=True)
Path("/tmp/attack/smtp.pid").write_text(str(p.pid))
print("SMTP sink back", p.pid)
deadline = time.time() + 300
while time.time() < deadline:
    with engine.connect() as c:
        left = c.execute(sa.text("select count(*) from outbox where status <> 'done'")).scalar()
    if not left:
        break
    time.sleep(3)
print("not done:", left)
sent = collections.Counter(m["To"].addresses[0].addr_spec for m in mails() if "outage-" + RUN in str(m["To"]))
acc = [a for a, s in answers.items() if s == 202]
print("accepted", len(acc), "mailed", len(sent), "missing", [a for a in acc if not sent[a]][:5],
      "dups", [a for a, n in sent.items() if n > 1][:5])
with engine.connect() as c:
    print(list(c.execute(sa.text("select status, kind, count(*), max(attempts) from outbox group by 1,2"))))
