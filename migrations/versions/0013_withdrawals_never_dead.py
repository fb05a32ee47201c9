"""outbox: queued withdrawals that were made dead letters wait again

A queued withdrawal (``withdrawal_intake``) is never given up any more (``OUTBOX_UNDYING``):
a dead one was a withdrawal lost to the worker, though groups already mailed nothing for
it. The rows left dead before go back to the queue, due at once (a dead row's next
attempt time is past), with fresh attempts; one
whose payload was blanked meanwhile does nothing when it runs.

Revision ID: 0013
Revises: 0012
"""
from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.execute(sa.text(
        "UPDATE outbox SET status = 'pending', attempts = 0, finished_at = NULL, "
        "claimed_by = NULL, claimed_until = NULL "
        "WHERE kind = 'withdrawal_intake' AND status = 'dead'"))


def downgrade():
    pass  # the rows revived are pending (or done) now, as they should have been
