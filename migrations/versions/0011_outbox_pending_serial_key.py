"""delivery: the claim's serial-key probe over pending rows only (issue 14, the burst)

The claim takes a row with a serial key only when no earlier pending row has the same
key: one probe per candidate row. With the plain index on ``serial_key`` the planner
(whose statistics lag behind a burst) ANDed it with ``ix_outbox_due``'s every pending
row, per candidate: quadratic in the backlog, 52 s a claim with 17,893 signups queued.
A partial index on (serial_key, id) over the pending rows answers each probe in a few
pages, and replaces the plain one (nothing else looks rows up by serial key).

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade():
    with op.batch_alter_table('outbox') as batch:
        batch.create_index('ix_outbox_pending_serial_key', ['serial_key', 'id'], unique=False,
                           sqlite_where=PENDING, postgresql_where=PENDING)
        batch.drop_index('ix_outbox_serial_key')


def downgrade():
    with op.batch_alter_table('outbox') as batch:
        batch.create_index('ix_outbox_serial_key', ['serial_key'], unique=False)
        batch.drop_index('ix_outbox_pending_serial_key')
