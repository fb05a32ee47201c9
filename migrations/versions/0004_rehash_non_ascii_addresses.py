"""rehash addresses the old case-folding merged (issue 13, finding 3)

Until issue 13 an address's keyed hash covered ``str.casefold()`` of it, which
made ``straße@…`` and ``strasse@…`` (or ``JÖRG@…`` and ``jörg@…``) one person.
The hash now covers ``optin.ops.pseudonyms.identity``: for ASCII addresses, and
IDN domains, it is the same text, so those hashes stand. Rows that still hold a
non-ASCII address get the new hash here, and each suppression under the old hash
is copied to the new one (the old one stays, since it may stand for the other
spelling's withdrawal as well: unsubscribe wins). Minimized rows (hash only)
cannot be recomputed and keep the old hash. No schema change.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

from optin.config import current_settings
from optin.ops.pseudonyms import keyed_hash

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    conn = op.get_bind()
    key = current_settings().hash_key
    sub = sa.table('subscription', sa.column('id'), sa.column('list_id'), sa.column('email'),
                   sa.column('email_hash'))
    sup = sa.table('suppression', sa.column('list_id'), sa.column('email_hash'),
                   sa.column('reason'), sa.column('created_at'))
    rows = conn.execute(sa.select(sub.c.id, sub.c.list_id, sub.c.email, sub.c.email_hash)
                        .where(sub.c.email.is_not(None))).all()
    for row_id, list_id, email, old in rows:
        if email.isascii():
            continue
        new = keyed_hash(email, key)
        if new == old:
            continue
        conn.execute(sub.update().where(sub.c.id == row_id).values(email_hash=new))
        for reason, created_at in conn.execute(
                sa.select(sup.c.reason, sup.c.created_at)
                .where(sup.c.list_id == list_id, sup.c.email_hash == old)).all():
            exists = conn.execute(sa.select(sa.func.count()).select_from(sup).where(
                sup.c.list_id == list_id, sup.c.email_hash == new)).scalar()
            if not exists:
                conn.execute(sup.insert().values(list_id=list_id, email_hash=new, reason=reason,
                                                 created_at=created_at))


def downgrade():
    pass  # the old hashes merged distinct mailboxes; there is nothing to go back to
