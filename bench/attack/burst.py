"""300 signups while the worker is killed -9 and the app's DB connections are terminated.

Afterwards: every 202 has exactly one confirmation mail (duplicates only around the crash),
every sent Message-ID is in the ledger/proof.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import engine, mails, proof, signup  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RUN = str(int(time.time()))
N = int(os.environ.get("BURST", "300"))
answers: dict[str, int] = {}


def start_worker() -> int:
    env = dict(os.environ)
    out = open("/tmp/attack/worker.err", "ab")  # noqa: SIM115
    p = subprocess.Popen(
        [os.environ.get("ATTACK_PY", "/tmp/venv-review/bin") + "/optin", "worker"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=out,
        start_new_session=True,
    )
    Path("/tmp/attack/worker.pid").write_text(str(p.pid))
    return p.pid


def one(i: int) -> None:
    addr = f"burst-{RUN}-{i}@example.org"
    try:
        answers[addr] = signup(addr, ip=f"10.9.{i // 250}.{i % 250 + 1}").status_code
    except Exception as exc:  # noqa: BLE001
        answers[addr] = -1
        print("client error", exc)


def chaos() -> None:
    time.sleep(2)
    pid = int(Path("/tmp/attack/worker.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    print("killed worker", pid, flush=True)
    time.sleep(1.5)
    with engine.connect() as c:
        n = c.execute(
            sa.text(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname='test_review' "
                "and pid <> pg_backend_pid() and application_name not like 'psql%'"
            )
        ).scalar()
    print("terminated", n, "backends", flush=True)
    time.sleep(0.5)
    print("restarted worker", start_worker(), flush=True)
    for _ in range(int(os.environ.get("CHAOS_LOOPS", "1"))):
        time.sleep(float(os.environ.get("CHAOS_PAUSE", "3")))
        with engine.connect() as c:
            n = c.execute(sa.text(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                "where datname='test_review' and pid <> pg_backend_pid()")).scalar()
        print("terminated again", n, "backends", flush=True)


t = threading.Thread(target=chaos)
t.start()
with ThreadPoolExecutor(6) as pool:
    list(pool.map(one, range(N)))
t.join()
print("answers:", collections.Counter(answers.values()))
# drain
deadline = time.time() + 420
while time.time() < deadline:
    with engine.connect() as c:
        left = c.execute(
            sa.text("select count(*) from outbox where status <> 'done' and kind='confirm_mail'")
        ).scalar()
    if left == 0:
        break
    time.sleep(3)
print("outbox not done:", left)
time.sleep(2)
sent = collections.defaultdict(list)
for m in mails():
    to = m["To"].addresses[0].addr_spec
    if to.startswith(f"burst-{RUN}-"):
        sent[to].append(str(m["Message-ID"]).strip())
accepted = [a for a, s in answers.items() if s == 202]
missing = [a for a in accepted if not sent.get(a)]
dups = {a: v for a, v in sent.items() if len(v) > 1}
extra = [a for a in sent if answers.get(a) != 202]
print(
    f"accepted {len(accepted)}, mailed {len(sent)}, missing {len(missing)}, duplicates {len(dups)}, "
    f"mailed but not 202: {len(extra)}"
)
for a in missing[:10]:
    print("missing", a)
with engine.connect() as c:
    recorded = set(
        c.execute(
            sa.text("select details->>'message_id' from consent_event where kind='confirmation_sent'")
        ).scalars()
    )
unrecorded = [(a, mid) for a, ids in sent.items() for mid in ids if mid not in recorded]
print("sent Message-IDs missing from the ledger:", len(unrecorded), unrecorded[:5])
for a, _mid in unrecorded[:3]:
    p = proof(a)
    ids = [e["details"].get("message_id") for c in p["consents"] for e in c["events"]]
    print("proof of", a, "has", ids, "; sent", sent[a])
for a, ids in list(dups.items())[:5]:
    print("dup", a, ids)
