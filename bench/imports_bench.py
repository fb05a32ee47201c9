"""Benchmark: ``optin import mailchimp`` of a generated Mailchimp export into PostgreSQL.

Generates a Mailchimp-shaped zip of ``--rows`` members (9 in 10 subscribed, 1 in 10
unsubscribed, with OPTIN/CONFIRM times and IPs and a merge field), then times, in the
same process on the same database,

1. the baseline: ``COPY`` of the same CSV rows into a plain table of text columns, and
2. optin's import of the zip as ``optin import mailchimp`` runs it (file hash, row count
   for the progress bar, validation, every row a subscription with its hash-chained
   ledger events, a suppression for each withdrawal, a committed cursor per batch),

and prints both times, their ratio and the process's peak RSS (``ru_maxrss``), so runs
at two sizes show whether memory stays flat. Then, as a floor, the time PostgreSQL alone
takes to load the rows the import wrote (``COPY`` of them into copies of the tables,
no Python work; see :func:`copy_floor`).

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


def copy_floor(url: str, folder: Path) -> float:
    """What PostgreSQL alone takes to store what the import wrote: the subscription and
    consent_event rows, dumped by ``COPY TO`` after the import, timed while ``COPY FROM``
    loads them into copies of the two tables (same columns, indexes and constraints, and
    the events' key to the subscriptions). No Python work is in it: the import's time
    above it is the per-row work of reading, checking, deciding and hashing."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    dumps = {}
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            for table in ("subscription", "consent_event"):
                dumps[table] = folder / f"{table}.copy"
                with dumps[table].open("wb") as out, \
                        cur.copy(f"COPY {table} TO STDOUT") as copy:
                    for chunk in copy:
                        out.write(chunk)
            cur.execute("DROP TABLE IF EXISTS floor_event, floor_subscription")
            cur.execute("CREATE TABLE floor_subscription (LIKE subscription INCLUDING ALL)")
            cur.execute("CREATE TABLE floor_event (LIKE consent_event INCLUDING ALL, "
                        "FOREIGN KEY (subscription_id) REFERENCES floor_subscription (id))")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            for table, target in (("subscription", "floor_subscription"),
                                  ("consent_event", "floor_event")):
                with cur.copy(f"COPY {target} FROM STDIN") as copy, \
                        dumps[table].open("rb") as handle:
                    while chunk := handle.read(1 << 16):
                        copy.write(chunk)
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE floor_event, floor_subscription")
        conn.commit()
    for path in dumps.values():
        path.unlink()
    return seconds


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
        db.session.commit()
        floor_seconds = copy_floor(args.database_url, folder)
    result = {"rows": args.rows, "counted": total, "copy_seconds": copy_seconds,
              "optin_seconds": optin_seconds, "ratio": optin_seconds / copy_seconds,
              "floor_seconds": floor_seconds, "floor_ratio": floor_seconds / copy_seconds,
              "subscriptions": stored, "events": events, "counts": summary.counts,
              "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out = io.StringIO()
    json.dump(result, out)
    print(("JSON " if args.json else "") + out.getvalue())


if __name__ == "__main__":
    main()
