"""outbox: a partial index of pending rows by (serial_key, id) for the claim

The claim asks of each due row whether an earlier row with its serial key is still
pending. With only the plain ``serial_key`` index, PostgreSQL without statistics for
a table that just grew (a burst) combined it with a scan of every pending row, per
due row: 38 s a claim with 19,000 queued signups. This index answers with one probe.

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('outbox') as batch:
        batch.create_index('ix_outbox_pending_serial', ['serial_key', 'id'], unique=False,
                           postgresql_where=sa.text("status = 'pending'"),
                           sqlite_where=sa.text("status = 'pending'"))


def downgrade():
    with op.batch_alter_table('outbox') as batch:
        batch.drop_index('ix_outbox_pending_serial')
