"""delivery engine: send intents, and NOTIFY on new outbox rows (issue 14)

``mail_intent`` holds the Message-ID of a mail about to be handed to the relay, so a
worker that dies between the relay's acceptance and its commit still leaves the mail
in the ledger (``delivery/intents.py``). On PostgreSQL a statement trigger on
``outbox`` sends ``NOTIFY optin_outbox`` with every insert, delivered when the
inserting transaction commits, which wakes idle workers at once whichever code
enqueued the work.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION optin_outbox_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('optin_outbox', '');
  RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER optin_outbox_notify AFTER INSERT ON outbox
FOR EACH STATEMENT EXECUTE FUNCTION optin_outbox_notify()
"""


def upgrade():
    op.create_table('mail_intent',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('outbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('subscription_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_mail_intent_outbox_id'), 'mail_intent', ['outbox_id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS optin_outbox_notify ON outbox")
        op.execute("DROP FUNCTION IF EXISTS optin_outbox_notify()")
    op.drop_index(op.f('ix_mail_intent_outbox_id'), table_name='mail_intent')
    op.drop_table('mail_intent')
