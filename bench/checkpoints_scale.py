"""Benchmark: signed ledger checkpoints over many chains, against `optin ledger verify`.

Generates ``--rows`` subscriptions with real hash chains (3 events each, made by
``ledger.event_row``), then times, in the same run:

1. the baseline: ``ledger.verify`` over every chain (what `optin ledger verify`
   always did),
2. the first checkpoint (every head moves), a second one after 1 % of the chains
   grew (the steady state of the worker's 10-minute job),
3. checking the database against the newest published checkpoint, and
4. a proof's checkpoint section (``checkpoints.covering``), cold and warm (the tree
   is kept for the next proof),

and prints each as seconds and as a ratio to the baseline.

    createdb -h 127.0.0.1 -U postgres optin_bench
    python bench/checkpoints_scale.py --database-url \\
        postgresql+psycopg://postgres@127.0.0.1:5432/optin_bench --rows 100000

It DROPS and recreates schema ``public`` of that database, so its name must
contain "bench" (or pass --force). Without --database-url: SQLite in a temporary folder.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optin import create_app  # noqa: E402
from optin.consent import checkpoints, ledger, lists  # noqa: E402
from optin.extensions import db  # noqa: E402
from optin.models import ConsentEvent, Subscription  # noqa: E402

KINDS = ("signup_requested", "confirmation_sent", "confirmed")


def generate(rows: int, list_id: int, text_id: int) -> None:
    """``rows`` confirmed subscriptions with three chained events each, inserted in chunks."""
    started = time.perf_counter()
    chunk = 5000
    for first in range(1, rows + 1, chunk):
        ids = range(first, min(rows, first + chunk - 1) + 1)
        subs, events = [], []
        for i in ids:
            head, seq = None, 0
            for kind in KINDS:
                row = ledger.event_row(i, seq, head, kind, origin="form", ip=f"198.51.100.{i % 250}",
                                       user_agent="Mozilla/5.0 (bench)", consent_text_id=text_id,
                                       details={"n": i})
                events.append(row)
                head, seq = row["chain_hash"], row["seq"]
            subs.append({"id": i, "list_id": list_id, "status": "confirmed",
                         "email": f"user{i}@example.org", "email_hash": f"{i:064x}",
                         "locale": "de", "nonce": f"{i:032x}", "consent_text_id": text_id,
                         "ledger_seq": seq, "ledger_head": head})
        db.session.execute(sa.insert(Subscription.__table__), subs)
        db.session.execute(sa.insert(ConsentEvent.__table__), events)
        db.session.commit()
    print(f"  generated {rows:,} chains ({3 * rows:,} events) in "
          f"{time.perf_counter() - started:.1f} s", flush=True)


def grow(share: float) -> int:
    """Append one event to every ``1/share``-th chain (locks as the state machine would)."""
    step = max(1, round(1 / share))
    subs = db.session.scalars(sa.select(Subscription).where(Subscription.id % step == 0)).all()
    for sub in subs:
        ledger.append(sub, "synced", origin="activecampaign")
    db.session.commit()
    return len(subs)


def timed(label: str, fn, baseline: float | None = None):  # noqa: ANN001, ANN201
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    ratio = f"  ({seconds / baseline:.2f} x baseline)" if baseline else ""
    print(f"  {label:<46} {seconds:8.2f} s{ratio}", flush=True)
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--force", action="store_true", help="allow a database not named *bench*")
    args = parser.parse_args()
    instance = Path(tempfile.mkdtemp(prefix="optin-bench-"))
    url = args.database_url or f"sqlite:///{instance / 'bench.db'}"
    if args.database_url and "bench" not in (sa.engine.make_url(url).database or "") and not args.force:
        sys.exit("refusing to wipe a database whose name lacks 'bench' (--force)")
    app = create_app({
        "OPTIN_ENV": "production", "OPTIN_DATABASE_URL": url,
        "OPTIN_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "OPTIN_INSTANCE_PATH": str(instance), "OPTIN_MAIL_URL": (instance / "mail").as_uri(),
        "OPTIN_LOG_LEVEL": "WARNING",
        "OPTIN_LEDGER_SIGNING_KEY": base64.b64encode(bytes(range(32))).decode(),
        "OPTIN_LEDGER_CHECKPOINT_FILE": str(instance / "checkpoints.jsonl"),
    })
    with app.app_context():
        from flask_migrate import upgrade

        if url.startswith("postgresql"):
            with db.engine.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public"))
        upgrade()
        mailing_list = lists.ensure_demo_list()
        text_id = db.session.scalar(sa.text("SELECT id FROM consent_text ORDER BY id LIMIT 1"))
        generate(args.rows, mailing_list.id, text_id)
        print(f"{args.rows:,} chains on {db.engine.dialect.name}:")
        report, base = timed("baseline: ledger.verify (every chain)", lambda: ledger.verify(db.session))
        assert report.ok, report.problems[:3]
        db.session.expunge_all()
        first, first_s = timed("first checkpoint (every head moved)",
                               lambda: checkpoints.make(reason="bench"), base)
        grown = grow(0.01)
        second, second_s = timed(f"next checkpoint ({grown:,} heads moved)",
                                 lambda: checkpoints.make(reason="bench"), base)
        anchored, verify_s = timed("database against the newest checkpoint",
                                   lambda: checkpoints.verify(), base)
        assert not anchored.problems, anchored.problems[:3]
        _, cold = timed("proof section, cold (tree built)", lambda: checkpoints.covering(1), base)
        _, warm = timed("proof section, warm", lambda: checkpoints.covering(args.rows // 2), base)
        print("JSON " + json.dumps({
            "rows": args.rows, "dialect": db.engine.dialect.name, "ledger_verify_s": round(base, 2),
            "first_checkpoint_s": round(first_s, 2), "next_checkpoint_s": round(second_s, 2),
            "verify_against_checkpoint_s": round(verify_s, 2), "proof_cold_s": round(cold, 3),
            "proof_warm_s": round(warm, 4), "moved_first": first.moved, "moved_next": second.moved}))
        db.session.remove()


if __name__ == "__main__":
    main()
