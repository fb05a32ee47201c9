"""Benchmark: the audit export (`optin proof --list SLUG --all --out DIR`) of N proofs.

Seeds ``--count`` addresses on one list through the service itself (signup, the
confirmation mail sent by the worker to a mail folder, the click for every other one),
on a fresh SQLite file (or ``--database-url``), then times, in the same run:

1. the baseline: the export with everything but the PDF layout (every proof built,
   audited and noted on its ledger, written as JSON, its HTML rendered), in this process,
2. the export as ``optin proof --all`` runs it: PDF laid out by a pool of ``--workers``
   processes (default: one per CPU),

and prints, for each, the wall time and the CPU time (this process and its workers) per
proof, the ratio to the baseline, and what 10,000 proofs take: at this run's wall rate,
and on an idle machine (CPU time ÷ cores). The last line is the figures as JSON.

    python bench/proof_export.py --count 500
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_migrate import upgrade  # noqa: E402

from optin import create_app  # noqa: E402
from optin.consent import lists  # noqa: E402
from optin.delivery.mailbox import newest_first  # noqa: E402
from optin.delivery.worker import Worker  # noqa: E402
from optin.privacy import document, proof_export  # noqa: E402


def _seed(app, count: int, mail: Path) -> None:
    client = app.test_client()
    with app.app_context():
        lists.ensure_demo_list()
    for n in range(count):
        client.post("/v1/subscriptions", json={
            "email": f"reader{n:05d}@example.org", "list": "newsletter", "locale": "de",
            "consent_text_version": 1, "first_name": f"Leser {n}",
            "source_url": "https://www.example.com/newsletter"},
            environ_base={"REMOTE_ADDR": f"192.0.2.{n % 250 + 1}"})
        if n % 200 == 199:
            Worker(app).drain()
    Worker(app).drain()
    # Every other one confirms: the proofs of a real list are mixed.
    for n, sent in enumerate(newest_first(mail)):
        confirm = [url for kind, url in sent.action_links if kind == "confirm"]
        if n % 2 == 0 and confirm:
            client.post(urlsplit(confirm[0]).path)
    Worker(app).drain()


def _cpu() -> float:
    own, children = (resource.getrusage(who) for who in
                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(app, out: Path, workers: int, pdf: bool = True) -> tuple[float, float, int]:
    with app.app_context():
        wall, cpu = time.perf_counter(), _cpu()
        if pdf:
            manifest = proof_export.export_list("newsletter", out, "bench", workers=workers)
        else:
            with mock.patch.object(document, "pdf_of", lambda html: b""):
                manifest = proof_export.export_list("newsletter", out, "bench", workers=1)
        return time.perf_counter() - wall, _cpu() - cpu, manifest["proofs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    instance = Path(tempfile.mkdtemp(prefix="optin-bench-export-"))
    app = create_app({
        "OPTIN_ENV": "development", "OPTIN_INSTANCE_PATH": str(instance),
        "OPTIN_MAIL_URL": (instance / "mail").as_uri(), "OPTIN_LOG_LEVEL": "ERROR",
        "OPTIN_RATELIMIT_SIGNUP": "100000000/minute", "OPTIN_MAILS_PER_ADDRESS_PER_DAY": "1000",
        **({"OPTIN_DATABASE_URL": args.database_url} if args.database_url else {}),
    })
    with app.app_context():
        upgrade()
    seeded = time.perf_counter()
    _seed(app, args.count, instance / "mail")
    print(f"seeded {args.count} addresses in {time.perf_counter() - seeded:.0f} s", flush=True)
    load = os.getloadavg()[0]
    runs = {"baseline (all but the PDF layout)": _timed(app, instance / "json-only", 1, pdf=False),
            f"pdf, {args.workers} processes": _timed(app, instance / "pool", args.workers)}
    (base_wall, base_cpu, proofs), (wall, cpu, _) = runs.values()
    for label, (w, c, n) in runs.items():
        print(f"{label:<36} {w:8.1f} s  {w / n * 1000:7.1f} ms/proof wall ({w / base_wall:5.1f}× "
              f"baseline)  {c / n * 1000:7.1f} ms/proof CPU ({c / base_cpu:5.1f}×)")
    cores = os.cpu_count() or 1
    at_rate, idle = 10_000 * wall / proofs, 10_000 * cpu / proofs / min(cores, args.workers + 1)
    print(f"10,000 proofs: {at_rate / 60:.0f} min at this run's rate (load average "
          f"{load:.1f} → {os.getloadavg()[0]:.1f} on {cores} CPUs), "
          f"{idle / 60:.0f} min of CPU ÷ {min(cores, args.workers + 1)} cores on an idle machine")
    print(json.dumps({"count": proofs, "workers": args.workers, "cores": cores,
                      "baseline_wall_s": round(base_wall, 2), "baseline_cpu_s": round(base_cpu, 2),
                      "pdf_wall_s": round(wall, 2), "pdf_cpu_s": round(cpu, 2),
                      "per_10000_min_at_rate": round(at_rate / 60, 1),
                      "per_10000_min_idle": round(idle / 60, 1), "loadavg_before": load,
                      "loadavg_after": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
