"""delivery: outbox rows that run one after another (serial key)

A row with a ``serial_key`` is claimed only when no earlier pending row has the
same key: one address's queued signups run in the order they came, whichever
worker thread takes them. Existing rows have none (any order, as before).

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('serial_key', sa.String(64), nullable=True))
        batch.create_index(batch.f('ix_outbox_serial_key'), ['serial_key'], unique=False)


def downgrade():
    with op.batch_alter_table('outbox') as batch:
        batch.drop_index(batch.f('ix_outbox_serial_key'))
        batch.drop_column('serial_key')
