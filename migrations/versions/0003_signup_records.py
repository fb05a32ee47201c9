"""signup records: each signup request's own values

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00.000000

Before this revision a repeat signup for a pending subscription overwrote the
subscription's values, so the row holds the values of its latest signup before
confirmation. That signup gets its record here, with the row's values: it is
what a confirmation link mailed before this revision confirms.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# The signup whose values a subscription row holds: its latest signup event before
# its first confirmation (a repeat after confirmation changed nothing).
BACKFILL = """
INSERT INTO signup (subscription_id, seq, created_at, email, locale, consent_text_id,
                    first_name, last_name, fields, source_url)
SELECT s.id, e.seq, e.at, s.email, s.locale, s.consent_text_id,
       s.first_name, s.last_name, s.fields, s.source_url
FROM subscription s JOIN consent_event e ON e.subscription_id = s.id
WHERE e.seq = (
    SELECT max(x.seq) FROM consent_event x
    WHERE x.subscription_id = s.id
      AND x.kind IN ('signup_requested', 'signup_repeated')
      AND x.seq < coalesce((SELECT min(c.seq) FROM consent_event c
                            WHERE c.subscription_id = s.id AND c.kind = 'confirmed'),
                           s.ledger_seq + 1))
"""


def upgrade():
    op.create_table('signup',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('subscription_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('locale', sa.String(length=8), nullable=False),
    sa.Column('consent_text_id', sa.Integer(), nullable=True),
    sa.Column('first_name', sa.String(length=200), nullable=True),
    sa.Column('last_name', sa.String(length=200), nullable=True),
    sa.Column('fields', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('source_url', sa.String(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['consent_text_id'], ['consent_text.id'], ),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscription.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subscription_id', 'seq')
    )
    op.execute(BACKFILL)


def downgrade():
    op.drop_table('signup')
