"""mail copies: the confirmation mail as it left (issue 16, part 1)

``mail_body`` keeps each part of a sent mail once, link token and names
marked (consent.mailcopies); ``mail_copy`` names the three parts of one mail
and, until the withdrawal, the names it quoted. Mails sent before this
revision have their hashes in the ledger and no copy.

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade():
    op.create_table('mail_body',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('sha256')
    )
    op.create_table('mail_copy',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('subscription_id', BIG_ID, nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=False),
    sa.Column('template', sa.String(length=64), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('subject_sha256', sa.String(length=64), nullable=False),
    sa.Column('text_sha256', sa.String(length=64), nullable=False),
    sa.Column('html_sha256', sa.String(length=64), nullable=False),
    sa.Column('names', JSON, nullable=True),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscription.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_mail_copy_subscription_id'), 'mail_copy', ['subscription_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_mail_copy_subscription_id'), table_name='mail_copy')
    op.drop_table('mail_copy')
    op.drop_table('mail_body')
