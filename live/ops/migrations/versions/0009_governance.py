"""governance: shop violations, shop applications, shop accounts, ledger entries, appeals

Revision ID: 0009
Revises: 0004
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_orders_updated_at', 'orders', ['updated_at'])
    op.create_table(
        'shop_violations',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('points', sa.Integer(), nullable=False),
        sa.Column('deduction_cents', sa.Integer(), nullable=False),
        sa.Column('note', sa.String(length=500), nullable=False),
        sa.Column('by', sa.String(length=32), nullable=False),
        sa.Column('restriction', sa.String(length=32), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('source', sa.String(length=120), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('source'),
    )
    op.create_index('ix_shop_violations_user_id', 'shop_violations', ['user_id'])
    op.create_index('ix_shop_violations_created_at', 'shop_violations', ['created_at'])
    op.create_table(
        'shop_applications',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('shop_name', sa.String(length=64), nullable=False),
        sa.Column('category', sa.String(length=64), nullable=False),
        sa.Column('license_image', sa.String(length=128), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('note', sa.String(length=500), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('decided_by', sa.String(length=32), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_shop_applications_user_id', 'shop_applications', ['user_id'])
    op.create_index('ix_shop_applications_status', 'shop_applications', ['status'])
    op.create_table(
        'shop_accounts',
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('user_id'),
    )
    op.create_table(
        'ledger_entries',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('bucket', sa.String(length=16), nullable=False),
        sa.Column('amount_cents', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=120), nullable=False),
        sa.Column('order_id', sa.String(length=64), nullable=True),
        sa.Column('violation_id', sa.String(length=32), nullable=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('kind', 'source', name='uq_ledger_source'),
    )
    op.create_index('ix_ledger_shop_at', 'ledger_entries', ['user_id', 'at'])
    op.create_index('ix_ledger_entries_order_id', 'ledger_entries', ['order_id'])
    op.create_table(
        'appeals',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('violation_id', sa.String(length=32), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('text', sa.String(length=2000), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('note', sa.String(length=500), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('decided_by', sa.String(length=32), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('violation_id'),
    )
    op.create_index('ix_appeals_user_id', 'appeals', ['user_id'])
    op.create_index('ix_appeals_status', 'appeals', ['status'])


def downgrade() -> None:
    for t in ('appeals', 'ledger_entries', 'shop_accounts', 'shop_applications', 'shop_violations'):
        op.drop_table(t)
    op.drop_index('ix_orders_updated_at', table_name='orders')
