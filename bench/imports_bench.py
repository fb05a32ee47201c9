"""Benchmark: ``optin import mailchimp`` of a generated Mailchimp export into PostgreSQL.

Generates a Mailchimp-shaped zip of ``--rows`` members (9 in 10 subscribed, 1 in 10
unsubscribed, with OPTIN/CONFIRM times and IPs and a merge field), then times, in the
same process on the same database,

1. the baseline: ``COPY`` of the same CSV rows into a plain table of text columns, and
2. optin's import of the zip as ``optin import mailchimp`` runs it (file hash, row count
   for the progress bar, validation, every row a subscription with its hash-chained
   ledger events, a suppression for each withdrawal, a committed cursor per batch),

and prints both times, their ratio and the process's peak RSS (``ru_maxrss``), so runs
at two sizes show whether memory stays flat.

    python bench/imports_bench.py --database-url \
        postgresql+psycopg://postgres@127.0.0.1:5432/optin_bench_imports --rows 100000

It DROPS and recreates schema ``public`` of that database, so its name must contain "bench".
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_migrate import upgrade  # noqa: E402

from optin import create_app  # noqa: E402
from optin.consent import lists  # noqa: E402
from optin.extensions import db  # noqa: E402
from optin.privacy import import_files, imports  # noqa: E402

HEADER = ["Email Address", "First Name", "Last Name", "Company", "MEMBER_RATING", "OPTIN_TIME",
          "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE", "LONGITUDE", "GMTOFF", "DSTOFF",
          "TIMEZONE", "CC", "REGION", "LAST_CHANGED", "LEID", "EUID", "NOTES", "TAGS",
          "UNSUB_TIME"]


def _member(i: int, unsubscribed: bool) -> list[str]:
    day = f"2021-{1 + i % 12:02}-{1 + i % 28:02}"
    return [f"member{i:07}@example.org", "First", f"Last{i}", f"Company {i % 97}", str(i % 5),
            f"{day} 10:{i % 60:02}:00", f"198.51.{i % 250}.{i % 200}", f"{day} 10:{i % 60:02}:30",
            f"203.0.{i % 250}.{i % 200}", "52.5", "13.4", "1", "2", "Europe/Berlin", "DE", "BE",
            f"{day} 11:00:00", str(i), f"e{i}", "", "",
            f"2023-01-{1 + i % 28:02} 00:00:00" if unsubscribed else ""]


def generate(folder: Path, rows: int) -> tuple[Path, list[Path]]:
    """The zip, and its two CSVs as plain files (the COPY baseline reads those)."""
    files = []
    for name, wanted in (("subscribed_members_export_bench.csv", lambda i: i % 10 != 0),
                         ("unsubscribed_members_export_bench.csv", lambda i: i % 10 == 0)):
        path = folder / name
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for i in range(rows):
                if wanted(i):
                    writer.writerow(_member(i, unsubscribed=name.startswith("unsub")))
        files.append(path)
    archive = folder / "members_export_bench.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in files:
            z.write(path, path.name)
    return archive, files


def copy_baseline(url: str, files: list[Path]) -> float:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    columns = ", ".join(f'"{c}" text' for c in HEADER)
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute(f"CREATE TABLE bench_copy ({columns})")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            for path in files:
                with cur.copy("COPY bench_copy FROM STDIN WITH (FORMAT csv, HEADER true)") as copy, \
                        path.open("rb") as handle:
                    while chunk := handle.read(1 << 16):
                        copy.write(chunk)
        conn.commit()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=imports.BATCH)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    if "bench" not in args.database_url and not args.force:
        sys.exit("the database name must contain 'bench' (its schema is dropped); or --force")
    app = create_app()
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        upgrade()
        mailing_list = lists.ensure_demo_list()
        folder = Path(tempfile.mkdtemp(prefix="optin-bench-import-"))
        archive, files = generate(folder, args.rows)
        copy_seconds = copy_baseline(args.database_url, files)
        started = time.perf_counter()
        source = import_files.MailchimpExport(archive, field_map={"Company": "company"})
        total = source.count()
        summary = imports.run(source, mailing_list, operator="bench", batch=args.batch)
        optin_seconds = time.perf_counter() - started
        stored = db.session.scalar(sa.text("SELECT count(*) FROM subscription"))
        events = db.session.scalar(sa.text("SELECT count(*) FROM consent_event"))
    result = {"rows": args.rows, "counted": total, "copy_seconds": copy_seconds,
              "optin_seconds": optin_seconds, "ratio": optin_seconds / copy_seconds,
              "subscriptions": stored, "events": events, "counts": summary.counts,
              "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out = io.StringIO()
    json.dump(result, out)
    print(("JSON " if args.json else "") + out.getvalue())


if __name__ == "__main__":
    main()
