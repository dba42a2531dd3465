"""usernames unique after NFKC + casefold

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-26

Adds ``users.username_canonical`` (unique) and fills it for existing accounts. An older
database may already hold names that collide once canonicalised (``Alice`` and ``alice``): the
oldest account keeps the canonical name, the later ones get NULL and go on signing in with
their exact username (login tries the exact name first). Nobody can register a new colliding
name. Nothing is renamed or deleted, so the migration cannot fail on old data.
"""
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def _canonical(name: str) -> str:
    # Same as live.core.auth.canonical_name (copied: a migration must not change when the app does).
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('username_canonical', sa.String(length=64), nullable=True))
    conn = op.get_bind()
    users = sa.table('users', sa.column('id', sa.String), sa.column('username', sa.String),
                     sa.column('created_at', sa.DateTime), sa.column('username_canonical', sa.String))
    rows = conn.execute(sa.select(users.c.id, users.c.username)
                        .where(users.c.username.is_not(None))
                        .order_by(users.c.created_at, users.c.id)).all()
    seen: set[str] = set()
    for user_id, username in rows:
        canonical = _canonical(username)[:64]
        if canonical in seen:
            continue  # a later account that already collided: keeps NULL (see above)
        seen.add(canonical)
        conn.execute(sa.update(users).where(users.c.id == user_id).values(username_canonical=canonical))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_users_username_canonical', ['username_canonical'])


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint('uq_users_username_canonical', type_='unique')
        batch_op.drop_column('username_canonical')
