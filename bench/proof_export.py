"""Benchmark: the audit export (`optin proof --list SLUG --all --out DIR`) of N proofs.

Seeds ``--count`` addresses on one list through the service itself (signup, the
confirmation mail sent by the worker to a mail folder, the click), on a fresh
SQLite file (or ``--database-url``), then times, in the same run:

1. the baseline: every proof built (audited, noted on its ledger) and written as
   JSON only, no PDF (``--workers 1``, layout skipped),
2. the export with PDF laid out in this process (``--workers 1``),
3. the export with a pool of ``--workers`` processes (default: one per CPU),

and prints seconds, proofs per second, each as a ratio to the baseline, and what
10,000 proofs take at the pool's rate.

    python bench/proof_export.py --count 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optin import create_app  # noqa: E402
from optin.consent import lists  # noqa: E402
from optin.delivery.worker import Worker  # noqa: E402
from optin.privacy import proof_export  # noqa: E402


def _seed(app, count: int) -> None:
    client = app.test_client()
    with app.app_context():
        lists.ensure_demo_list()
    for n in range(count):
        client.post("/v1/subscriptions", json={
            "email": f"reader{n:05d}@example.org", "list": "newsletter", "locale": "de",
            "consent_text_version": 1, "first_name": f"Leser {n}",
            "source_url": "https://www.example.com/newsletter"},
            environ_base={"REMOTE_ADDR": f"192.0.2.{n % 250 + 1}"})
    Worker(app).drain()


def _timed(app, out: Path, workers: int, pdf: bool = True) -> float:
    with app.app_context():
        start = time.perf_counter()
        if pdf:
            proof_export.export_list("newsletter", out, "bench", workers=workers)
        else:
            with mock.patch.object(proof_export, "_pdf_job", lambda html: b""):
                proof_export.export_list("newsletter", out, "bench", workers=1)
        return time.perf_counter() - start


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
        from flask_migrate import upgrade
        upgrade()
    _seed(app, args.count)
    baseline = _timed(app, instance / "json-only", 1, pdf=False)
    single = _timed(app, instance / "one-process", 1)
    pool = _timed(app, instance / "pool", args.workers)
    rows = {"json only (baseline)": baseline, "pdf, 1 process": single,
            f"pdf, {args.workers} processes": pool}
    for label, seconds in rows.items():
        print(f"{label:<24} {seconds:8.1f} s  {args.count / seconds:7.2f} proofs/s  "
              f"× {seconds / baseline:5.1f} baseline")
    print(f"10,000 proofs at the pool's rate: {10_000 / (args.count / pool) / 60:.0f} min "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(json.dumps({"count": args.count, "workers": args.workers,
                      **{k: round(v, 2) for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
