"""A run records why it was started when something other than a person started it (an autopilot
step: the autopilot, its step, the parent run and the reason); a job has a kind (a training run,
or an approved autopilot) and, for an autopilot, the folder it drives.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.Text(), nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=20), server_default='train', nullable=False))
        batch_op.add_column(sa.Column('target', sa.Text(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('target')
        batch_op.drop_column('kind')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('origin')
