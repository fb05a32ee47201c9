"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from optin.extensions import db


def test_migrated_schema_matches_the_models(app):
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_no_index_is_covered_by_another(app):
    """An index whose columns lead another index (or a unique constraint) only costs every
    write: the ledger append and the import paid for ``consent_event.subscription_id`` twice."""
    with app.app_context():
        inspector = inspect(db.engine)
        covered = []
        for table in inspector.get_table_names():
            indexes = [(i["name"], tuple(i["column_names"]), i.get("dialect_options", {}))
                       for i in inspector.get_indexes(table)]
            indexes += [(u["name"], tuple(u["column_names"]), {})
                        for u in inspector.get_unique_constraints(table)]
            for name, columns, options in indexes:
                if any("where" in key for key in options):  # a partial index stands alone
                    continue
                for other, longer, other_options in indexes:
                    if other != name and len(longer) > len(columns) \
                            and longer[:len(columns)] == columns \
                            and not any("where" in key for key in other_options):
                        covered.append((table, name, other))
    assert covered == []


def test_readyz_reports_migrations_at_head(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "migrations": "ok"}
    assert client.get("/healthz").json == {"status": "ok"}


def test_signup_records_are_made_for_subscriptions_of_before(app):
    """0003 gives each subscription the record of the signup whose values it holds: its
    latest signup before its first confirmation (a repeat overwrote a pending row's values)."""
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text

    def event(sub: int, seq: int, kind: str) -> dict:
        return {"s": sub, "q": seq, "k": kind, "at": f"2026-01-0{seq} 10:00:00"}

    with app.app_context():
        downgrade(revision="0002")
        with db.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO mailing_list (id, slug, name, redirect_urls, origins, default_locale,"
                " send_welcome, send_goodbye, created_at) VALUES (1, 'news', 'News', '[]', '[]',"
                " 'de', true, false, '2026-01-01 00:00:00')"))
            for sub, status, name in ((1, "pending", "Mallory"), (2, "confirmed", "Anna")):
                conn.execute(text(
                    "INSERT INTO subscription (id, list_id, status, email, email_hash, locale,"
                    " first_name, nonce, created_at, updated_at, ledger_seq) VALUES (:id, 1,"
                    " :status, 'a@example.org', :hash, 'en', :name, 'n', '2026-01-01 00:00:00',"
                    " '2026-01-01 00:00:00', 3)"),
                    {"id": sub, "status": status, "name": name, "hash": f"h{sub}"})
            conn.execute(text(
                "INSERT INTO consent_event (subscription_id, seq, kind, at, origin, details,"
                " content_hash, chain_hash) VALUES (:s, :q, :k, :at, 'form', '{}', 'c', 'c')"),
                [event(1, 1, "signup_requested"), event(1, 2, "signup_repeated"),
                 event(1, 3, "confirmation_sent"), event(2, 1, "signup_requested"),
                 event(2, 2, "confirmed"), event(2, 3, "signup_repeated")])
        upgrade()
        with db.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT subscription_id, seq, first_name, locale FROM signup"
                " ORDER BY subscription_id")).all()
    assert [tuple(r) for r in rows] == [(1, 2, "Mallory", "en"), (2, 1, "Anna", "en")]
