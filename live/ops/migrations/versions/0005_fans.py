"""fans: follows, follower counts, go-live events, reminders, read cursors, lucky bags;
cards.audience, rooms.scheduled_at

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('follows',
    sa.Column('follower_id', sa.String(length=32), nullable=False),
    sa.Column('followee_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('follower_id', 'followee_id')
    )
    op.create_index('ix_follows_followee', 'follows', ['followee_id', 'follower_id'], unique=False)
    op.create_table('follow_counts',
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('followers', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('fan_events',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('streamer_id', sa.String(length=32), nullable=False),
    sa.Column('room_id', sa.String(length=32), nullable=False),
    sa.Column('title', sa.String(length=120), nullable=False),
    sa.Column('streamer_name', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_fan_events_streamer', 'fan_events', ['streamer_id', 'id'], unique=False)
    op.create_index('ix_fan_events_room', 'fan_events', ['room_id'], unique=False)
    op.create_table('room_reminders',
    sa.Column('room_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('room_id', 'user_id')
    )
    op.create_index('ix_room_reminders_user_id', 'room_reminders', ['user_id'], unique=False)
    op.create_table('notify_cursors',
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('read_upto', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('lucky_bags',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('room_id', sa.String(length=32), nullable=False),
    sa.Column('streamer_id', sa.String(length=32), nullable=False),
    sa.Column('title', sa.String(length=120), nullable=False),
    sa.Column('prize', sa.String(length=120), nullable=False),
    sa.Column('winners', sa.Integer(), nullable=False),
    sa.Column('condition', sa.String(length=16), nullable=False),
    sa.Column('keyword', sa.String(length=64), nullable=True),
    sa.Column('allow_guests', sa.Boolean(), nullable=False),
    sa.Column('seed', sa.String(length=64), nullable=False),
    sa.Column('commitment', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('drawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('entrants', sa.JSON(), nullable=True),
    sa.Column('winner_ids', sa.JSON(), nullable=True),
    sa.Column('prize_card_id', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_lucky_bags_room_id', 'lucky_bags', ['room_id'], unique=False)
    op.create_index('ix_lucky_bags_streamer_id', 'lucky_bags', ['streamer_id'], unique=False)
    op.create_index('ix_lucky_bags_status', 'lucky_bags', ['status'], unique=False)
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('audience', sa.String(length=16), nullable=False, server_default='all'))
    with op.batch_alter_table('rooms', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('rooms', schema=None) as batch_op:
        batch_op.drop_column('scheduled_at')
    with op.batch_alter_table('cards', schema=None) as batch_op:
        batch_op.drop_column('audience')
    for name in ('lucky_bags', 'notify_cursors', 'room_reminders', 'fan_events', 'follow_counts', 'follows'):
        op.drop_table(name)
