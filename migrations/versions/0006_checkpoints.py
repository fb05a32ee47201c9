"""ledger checkpoints: signed Merkle roots over the chain heads (issue 16)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:45:00.000000
"""
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('ledger_checkpoint',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tree_size', sa.Integer(), nullable=False),
    sa.Column('root', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('statement', sa.Text(), nullable=False),
    sa.Column('signature', sa.String(length=128), nullable=False),
    sa.Column('tsa_token', sa.Text(), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('ledger_checkpoint_leaf',
    sa.Column('checkpoint_id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('chain_hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['ledger_checkpoint.id'], ),
    sa.PrimaryKeyConstraint('checkpoint_id', 'subscription_id')
    )
    op.create_index('ix_ledger_checkpoint_leaf_subscription', 'ledger_checkpoint_leaf', ['subscription_id', 'checkpoint_id'], unique=False)
    # The row checkpoint makers lock, so two of them never number one checkpoint twice.
    job_state = sa.table('job_state', sa.column('name', sa.String), sa.column('value', sa.JSON),
                         sa.column('updated_at', sa.DateTime(timezone=True)))
    op.bulk_insert(job_state, [{'name': 'ledger:checkpoint', 'value': {},
                                'updated_at': datetime.now(UTC)}])


def downgrade():
    op.execute("DELETE FROM job_state WHERE name = 'ledger:checkpoint'")
    op.drop_index('ix_ledger_checkpoint_leaf_subscription', table_name='ledger_checkpoint_leaf')
    op.drop_table('ledger_checkpoint_leaf')
    op.drop_table('ledger_checkpoint')
