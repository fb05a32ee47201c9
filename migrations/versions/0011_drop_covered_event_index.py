"""consent_event: drop the index on subscription_id that the (subscription_id, seq) key covers

The unique constraint's index leads with ``subscription_id``, so it answers every lookup
the single-column index did; the second index only cost each ledger append and import.

Revision ID: 0011
Revises: 0010
"""
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('consent_event') as batch:
        batch.drop_index(batch.f('ix_consent_event_subscription_id'))


def downgrade():
    with op.batch_alter_table('consent_event') as batch:
        batch.create_index(batch.f('ix_consent_event_subscription_id'), ['subscription_id'],
                           unique=False)
