"""pages: each list's website, imprint, postal address and sender name (issue 18)

Shown in the footers of pages and mails (optin.ops.identity); unset, the
global settings (OPTIN_CONTROLLER_NAME, OPTIN_CONTROLLER_ADDRESS) and the
brand name stand in. Nullable columns only: existing lists keep working.

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

COLUMNS = (("website_url", 2000), ("imprint_url", 2000), ("postal_address", 500),
           ("sender_name", 200))


def upgrade():
    with op.batch_alter_table('mailing_list') as batch:
        for name, length in COLUMNS:
            batch.add_column(sa.Column(name, sa.String(length), nullable=True))


def downgrade():
    with op.batch_alter_table('mailing_list') as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
