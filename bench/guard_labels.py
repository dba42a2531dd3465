"""Export moderators' decisions on held chat as labelled data for tuning the guard.

    python -m bench.guard_labels > tests/data/guard_moderated.tsv   # settings as for the server

Rows are ``label<TAB>family<TAB>text`` like the other guard sets: a rejected message is ``pos``
(private trading), an approved one ``neg``; the family names the guard's strongest signal, so
``python -m bench.guard_eval`` reports per signal. Use the output for tuning only — a held-out
set must be written before the change it measures, and these messages are not unseen.
"""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.core import db as dbmod
from live.core.models import HeldMessage
from live.core.settings import load_settings

LABELS = {"rejected": "pos", "approved": "neg"}


async def labelled_rows(db: async_sessionmaker[AsyncSession]) -> list[str]:
    """One TSV line per decided held message, oldest first."""
    async with db() as s:
        rows = (await s.execute(select(HeldMessage).where(HeldMessage.status.in_(list(LABELS)))
                                .order_by(HeldMessage.created_at, HeldMessage.id))).scalars().all()
    lines = []
    for h in rows:
        family = f"moderated_{h.signals[0][0]}" if h.signals else "moderated"
        text = " ".join(h.text.split())  # one line, no tabs
        lines.append(f"{LABELS[h.status]}\t{family}\t{text}")
    return lines


async def _main() -> int:
    settings = load_settings()
    engine = dbmod.make_engine(settings.resolved_database_url)
    try:
        lines = await labelled_rows(dbmod.make_sessionmaker(engine))
    finally:
        await engine.dispose()
    sys.stdout.write("# label\tfamily\ttext: moderators' decisions on held chat (bench.guard_labels)\n")
    sys.stdout.writelines(line + "\n" for line in lines)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
