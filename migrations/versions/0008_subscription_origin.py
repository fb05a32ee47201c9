"""subscription.imported_from: which system an imported consent came from (issue 17)

NULL for a consent recorded here (a signup confirmed by this service's own link);
``mailchimp``, ``csv`` or ``activecampaign`` for one brought in by ``optin import``,
whose evidence is the ledger's ``consent_imported`` event. Stats and ``lists show``
count the two apart.

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.add_column(sa.Column('imported_from', sa.String(length=32), nullable=True))


def downgrade():
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.drop_column('imported_from')
