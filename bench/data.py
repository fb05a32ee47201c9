"""Set-based test data (``INSERT … SELECT generate_series``), fast enough for 100,000s of rows."""

from __future__ import annotations

import sqlalchemy as sa

from optin.consent.tokens import CONFIRM, make_token

from .stack import SECRET_KEY

SUBSCRIPTIONS = """
INSERT INTO subscription (list_id, status, email, email_hash, locale, first_name, last_name,
    fields, source_url, consent_text_id, nonce, created_at, updated_at, confirmed_at,
    retain_until, last_mail_requested_at, ledger_seq)
SELECT l.id, CAST(:status AS text), CAST(:prefix AS text) || g || '@example.org',
       encode(sha256(convert_to(CAST(:prefix AS text) || g || '@example.org', 'UTF8')), 'hex'),
       t.locale, 'First' || g, 'Last' || g, NULL, 'https://example.com/landing',
       t.id, md5(CAST(:prefix AS text) || g), now(), now(),
       CASE WHEN CAST(:status AS text) = 'confirmed' THEN now() END,
       CASE WHEN CAST(:status AS text) = 'pending' THEN now() + interval '14 days' END,
       now() - interval '1 hour', 0
FROM generate_series(1, :n) AS g,
     (SELECT id FROM mailing_list WHERE slug = 'newsletter') AS l,
     (SELECT id, locale FROM consent_text ORDER BY id LIMIT 1) AS t
"""

CONFIRM_MAILS = """
INSERT INTO outbox (kind, payload, subscription_id, status, attempts, next_attempt_at, created_at)
SELECT 'confirm_mail', '{}', id, 'pending', 0, now() - interval '1 second', now()
FROM subscription WHERE status = 'pending' ORDER BY id
"""


def subscriptions(engine: sa.Engine, n: int, status: str, prefix: str = "gen") -> None:
    """``n`` subscriptions of one status on the demo list (no ledger events yet)."""
    with engine.begin() as conn:
        conn.execute(sa.text(SUBSCRIPTIONS), {"n": n, "status": status, "prefix": prefix})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE subscription"))


def confirm_mails(engine: sa.Engine) -> int:
    """One queued confirmation mail per pending subscription."""
    with engine.begin() as conn:
        count = conn.execute(sa.text(CONFIRM_MAILS)).rowcount
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE outbox"))
    return count


def confirm_tokens(engine: sa.Engine) -> list[str]:
    """A confirmation link token for every pending subscription, as the mail would carry."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT id, nonce FROM subscription WHERE status = 'pending' ORDER BY id")).all()
    return [make_token(SECRET_KEY, CONFIRM, sid, nonce) for sid, nonce in rows]
