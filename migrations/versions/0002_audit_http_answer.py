"""audit_entry: an HTTP call's method, route and answer status

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:45:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('method', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('route', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('status', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_column('status')
        batch_op.drop_column('route')
        batch_op.drop_column('method')
