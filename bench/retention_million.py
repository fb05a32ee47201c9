"""Benchmark: `optin retention run` over a million lapsed subscriptions on PostgreSQL.

Generates ``--rows`` withdrawn subscriptions whose proof has lapsed (3 ledger
events each, with IPs, user agents and personal details), plus ``--active``
confirmed subscriptions that must not be touched, using set-based
``INSERT … SELECT generate_series``. Then it times

1. optin's retention run (batches of ``--batch``, each its own transaction,
   which also appends and hash-chains one ``minimized`` event per
   subscription and clears finished outbox rows), and
2. the same data regenerated, minimized by one hand-written transaction of
   two UPDATE statements setting the same subscription and event columns
   (no ledger event, all rows locked until the end),

and prints both times and their ratio. The ratio is the price of short
locks, concurrency safety and the ledger entry.

    createdb -h 127.0.0.1 -U postgres optin_bench
    python bench/retention_million.py --database-url \
        postgresql+psycopg://postgres@127.0.0.1:5432/optin_bench --rows 1000000

It DROPS and recreates schema ``public`` of that database, so the database
name must contain "bench" (or pass --force).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optin import create_app
from optin.consent import lists
from optin.extensions import db  # noqa: E402
from optin.privacy import retention  # noqa: E402

GENERATE_SUBSCRIPTIONS = """
INSERT INTO subscription (list_id, status, email, email_hash, locale, first_name, last_name,
    fields, source_url, consent_text_id, nonce, created_at, updated_at, confirmed_at,
    withdrawn_at, withdrawal_origin, retain_until, ledger_seq, ledger_head)
SELECT :list_id,
       CASE WHEN g <= :lapsed THEN 'unsubscribed' ELSE 'confirmed' END,
       'user' || g || '@example.org',
       encode(sha256(convert_to('user' || g || '@example.org', 'UTF8')), 'hex'),
       'de', 'First' || g, 'Last' || g,
       jsonb_build_object('company', 'Company ' || g),
       'https://www.example.com/landing?ref=' || g,
       :text_id, md5(g::text), ts, ts, ts + interval '5 minutes',
       CASE WHEN g <= :lapsed THEN ts + interval '30 days' END,
       CASE WHEN g <= :lapsed THEN 'link' END,
       CASE WHEN g <= :lapsed THEN timestamptz '2020-12-31 23:00:00+00' END,
       3, md5('head' || g) || md5('head2' || g)
FROM generate_series(1, :total) AS g,
     LATERAL (SELECT timestamptz '2016-01-01' + (g % 100000) * interval '1 minute' AS ts) t
"""

GENERATE_EVENTS = """
INSERT INTO consent_event (subscription_id, seq, kind, at, ip, user_agent, consent_text_id,
    origin, details, content_hash, chain_hash)
SELECT s.id, e.seq,
       (ARRAY['signup_requested', 'confirmed', 'unsubscribed'])[e.seq],
       s.created_at + e.seq * interval '1 minute',
       '198.51.' || (s.id % 250) || '.' || (e.seq * 20),
       'Mozilla/5.0 (bench ' || s.id || ')',
       CASE WHEN e.seq < 3 THEN :text_id END,
       (ARRAY['form', 'link', 'link'])[e.seq],
       CASE e.seq
         WHEN 1 THEN jsonb_build_object('email', s.email, 'first_name', s.first_name,
                       'source_url', s.source_url, 'consent_text_version', 1,
                       'fields_entered', jsonb_build_array('company', 'first_name'))
         WHEN 2 THEN '{}'::jsonb
         ELSE jsonb_build_object('was', 'confirmed')
       END,
       md5('c' || s.id || e.seq) || md5('d' || s.id || e.seq),
       md5('h' || s.id || e.seq) || md5('i' || s.id || e.seq)
FROM subscription s CROSS JOIN generate_series(1, 3) AS e(seq)
"""

HAND_WRITTEN = [
    """
    UPDATE consent_event SET ip = NULL, user_agent = NULL, redacted_at = now(),
        details = (SELECT coalesce(jsonb_object_agg(k.key, k.value), '{}'::jsonb)
                   FROM jsonb_each(consent_event.details) AS k
                   WHERE k.key IN (KEPT_KEYS))
    WHERE subscription_id IN (
        SELECT id FROM subscription
        WHERE retain_until <= now() AND minimized_at IS NULL
          AND status IN ('pending', 'unsubscribed'))
    """.replace("KEPT_KEYS", ", ".join(f"'{k}'" for k in retention.KEPT_DETAIL_KEYS)),
    """
    UPDATE subscription SET status = 'minimized', minimized_at = now(), updated_at = now(),
        email = NULL, first_name = NULL, last_name = NULL, fields = NULL, source_url = NULL,
        ac_contact_id = NULL
    WHERE retain_until <= now() AND minimized_at IS NULL
      AND status IN ('pending', 'unsubscribed')
    """,
]


def generate(rows: int, active: int) -> None:
    """Empty the tables and fill them again (set-based), then VACUUM ANALYZE."""
    started = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE consent_event, outbox, subscription, retention_run, "
                             "suppression RESTART IDENTITY"))
        list_id, text_id = conn.execute(sa.text(
            "SELECT l.id, t.id FROM mailing_list l JOIN consent_text t ON t.list_id = l.id "
            "WHERE l.slug = 'newsletter' ORDER BY t.id LIMIT 1")).one()
        conn.execute(sa.text(GENERATE_SUBSCRIPTIONS),
                     {"list_id": list_id, "text_id": text_id, "lapsed": rows,
                      "total": rows + active})
        conn.execute(sa.text(GENERATE_EVENTS), {"text_id": text_id})
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE subscription"))
        conn.execute(sa.text("VACUUM ANALYZE consent_event"))
    print(f"  generated {rows:,} lapsed + {active:,} active subscriptions, "
          f"{3 * (rows + active):,} events in {time.perf_counter() - started:.1f} s", flush=True)


def check(rows: int, active: int) -> None:
    with db.engine.connect() as conn:
        minimized = conn.scalar(sa.text(
            "SELECT count(*) FROM subscription WHERE status = 'minimized' AND email IS NULL"))
        untouched = conn.scalar(sa.text(
            "SELECT count(*) FROM subscription WHERE status = 'confirmed' AND email IS NOT NULL "
            "AND minimized_at IS NULL"))
        leaked = conn.scalar(sa.text(
            "SELECT count(*) FROM consent_event e JOIN subscription s ON s.id = e.subscription_id "
            "WHERE s.status = 'minimized' AND (e.ip IS NOT NULL OR e.details ? 'email')"))
    assert (minimized, untouched, leaked) == (rows, active, 0), (minimized, untouched, leaked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url",
                        default="postgresql+psycopg://postgres@127.0.0.1:5432/optin_bench")
    parser.add_argument("--rows", type=int, default=1_000_000, help="lapsed subscriptions")
    parser.add_argument("--active", type=int, default=None,
                        help="confirmed subscriptions that must stay (default: rows / 10)")
    parser.add_argument("--batch", type=int, default=retention.DEFAULT_BATCH)
    parser.add_argument("--force", action="store_true", help="allow a database not named *bench*")
    parser.add_argument("--json", action="store_true", help="also print a JSON line (for bench/)")
    args = parser.parse_args()
    active = args.rows // 10 if args.active is None else args.active
    url = sa.engine.make_url(args.database_url)
    if "bench" not in (url.database or "") and not args.force:
        sys.exit(f"refusing to wipe database {url.database!r}: its name lacks 'bench' (--force)")

    instance = Path(tempfile.mkdtemp(prefix="optin-bench-"))
    app = create_app({
        "OPTIN_ENV": "production",
        "OPTIN_DATABASE_URL": args.database_url,
        "OPTIN_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "OPTIN_CONTROLLER_NAME": "Bench GmbH",
        "OPTIN_CONTROLLER_ADDRESS": "Benchstraße 1; 10115 Berlin",
        "OPTIN_INSTANCE_PATH": str(instance),
        "OPTIN_MAIL_URL": (instance / "mail").as_uri(),
        "OPTIN_LOG_LEVEL": "WARNING",
    })
    with app.app_context():
        from flask_migrate import upgrade

        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public"))
        upgrade()
        lists.ensure_demo_list()
        as_of = datetime.now(UTC)

        print(f"optin retention run, batch {args.batch}:", flush=True)
        generate(args.rows, active)
        started = time.perf_counter()
        report = retention.run(as_of, batch=args.batch)
        optin_seconds = time.perf_counter() - started
        check(args.rows, active)
        print(f"  {optin_seconds:.1f} s  ({report.counts})", flush=True)

        print("hand-written SQL, one transaction:", flush=True)
        generate(args.rows, active)
        started = time.perf_counter()
        with db.engine.begin() as conn:
            for statement in HAND_WRITTEN:
                conn.execute(sa.text(statement))
        hand_seconds = time.perf_counter() - started
        check(args.rows, active)
        print(f"  {hand_seconds:.1f} s", flush=True)

        print(f"\n{args.rows:,} lapsed subscriptions ({3 * args.rows:,} events): "
              f"optin {optin_seconds:.1f} s, hand-written {hand_seconds:.1f} s, "
              f"ratio {optin_seconds / hand_seconds:.2f}")
        if args.json:
            print("JSON " + json.dumps({"rows": args.rows, "active": active, "batch": args.batch,
                                        "optin_seconds": round(optin_seconds, 2),
                                        "hand_seconds": round(hand_seconds, 2)}))
        db.session.remove()
        db.engine.dispose()


if __name__ == "__main__":
    main()
