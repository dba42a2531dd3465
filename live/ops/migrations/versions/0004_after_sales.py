"""after-sales: order fulfilment and money columns, cases, their history, payments

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

def order_columns() -> list[sa.Column]:
    return [
        sa.Column('paid_amount_cents', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('refunded_amount_cents', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('stock_returned', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('carrier', sa.String(length=64), nullable=True),
        sa.Column('tracking_no', sa.String(length=64), nullable=True),
        sa.Column('shipped_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('refunded_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('after_sale_id', sa.String(length=80), nullable=True),
        sa.Column('version', sa.Integer(), nullable=False, server_default='0'),
    ]


def upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        for col in order_columns():
            batch_op.add_column(col)
    op.create_table(
        'after_sale_cases',
        sa.Column('id', sa.String(length=80), nullable=False),
        sa.Column('order_id', sa.String(length=64), nullable=False),
        sa.Column('card_id', sa.String(length=32), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('streamer_id', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('reason', sa.String(length=500), nullable=False),
        sa.Column('amount_cents', sa.Integer(), nullable=False),
        sa.Column('deadline', sa.DateTime(timezone=True), nullable=True),
        sa.Column('return_carrier', sa.String(length=64), nullable=True),
        sa.Column('return_tracking_no', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('after_sale_cases', schema=None) as batch_op:
        batch_op.create_index('ix_after_sale_cases_order_id', ['order_id'], unique=False)
        batch_op.create_index('ix_after_sale_cases_card_id', ['card_id'], unique=False)
        batch_op.create_index('ix_after_sale_cases_user_id', ['user_id'], unique=False)
        batch_op.create_index('ix_after_sale_cases_status', ['status'], unique=False)
        batch_op.create_index('ix_after_sale_cases_streamer_status', ['streamer_id', 'status'], unique=False)
    op.create_table(
        'after_sale_steps',
        sa.Column('case_id', sa.String(length=80), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('by', sa.String(length=32), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('note', sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint('case_id', 'seq'),
    )
    op.create_table(
        'payments',
        sa.Column('transaction_id', sa.String(length=128), nullable=False),
        sa.Column('order_id', sa.String(length=64), nullable=False),
        sa.Column('amount_cents', sa.Integer(), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('transaction_id'),
    )
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index('ix_payments_order_id', ['order_id'], unique=False)


def downgrade() -> None:
    op.drop_table('payments')
    op.drop_table('after_sale_steps')
    op.drop_table('after_sale_cases')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        for col in reversed(order_columns()):
            batch_op.drop_column(col.name)
