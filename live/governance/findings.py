"""The server's own findings against shops, turned into violations by a sweeper on every
process (idempotent on ``shop_violations.source``, so racing sweepers record each once):

- ``guard:<id>``: the guard refused private trading written by a shop's own (streamer) account —
  a chat message, a room title, a card's text or image (the chat ``violations`` audit rows);
- ``dispute:<case id>``: a shop lost a dispute — an escalated after-sales case that ended refunded;
- ``report:<id>``: a report against the shop's room or card that a moderator upheld (resolved
  with ``mute`` or ``ban``; ``dismiss`` is not upheld).

Only findings younger than ``violation_decay_s`` are considered (older ones would be expired).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import literal, select

from live.core.models import AfterSaleCase, AfterSaleStep, Card, Report, Room, ShopViolation, User, Violation


async def sweep(gov: Any, limit: int = 200) -> int:
    """Record the findings not yet recorded; how many were recorded."""
    since = gov.now() - timedelta(seconds=gov.settings.violation_decay_s)
    sources = select(ShopViolation.source).where(ShopViolation.source.is_not(None))
    guard_q = (select(Violation.id, Violation.user_id, Violation.kind, Violation.detector, Violation.fragment)
               .join(User, User.id == Violation.user_id)
               .where(User.role == "streamer", Violation.reason == "private_trading", Violation.created_at >= since)
               .where((literal("guard:") + Violation.id).not_in(sources)).limit(limit))
    escalated = select(AfterSaleStep.case_id).where(AfterSaleStep.status == "escalated")
    dispute_q = (select(AfterSaleCase.id, AfterSaleCase.streamer_id)
                 .where(AfterSaleCase.status == "refunded", AfterSaleCase.created_at >= since,
                        AfterSaleCase.id.in_(escalated))
                 .where((literal("dispute:") + AfterSaleCase.id).not_in(sources)).limit(limit))
    reports_q = (select(Report.id, Report.target, Report.target_id)
                 .where(Report.status == "resolved", Report.resolution.in_(("mute", "ban")),
                        Report.target.in_(("room", "card")), Report.created_at >= since)
                 .where((literal("report:") + Report.id).not_in(sources)).limit(limit))
    async with gov.svc.db() as s:
        guard = (await s.execute(guard_q)).all()
        disputes = (await s.execute(dispute_q)).all()
        reports = []
        for rid, target, target_id in (await s.execute(reports_q)).all():
            room_id = target_id if target == "room" else (await s.get(Card, target_id) or Card()).room_id
            room = await s.get(Room, room_id) if room_id else None
            if room is not None:
                reports.append((rid, target, room.streamer_id))
    n = 0
    for vid, user_id, what, detector, fragment in guard:
        # The guard's reason travels with the finding: its detector and the normalised fragment
        # it matched (what a moderator and an appeal need to see).
        why = f"{detector}: “{fragment}”" if fragment else (detector or "guard")
        n += await gov.record(None, user_id, "private_trading", f"private trading in a {what} (guard {why})",
                              source=f"guard:{vid}") is not None
    for case_id, shop in disputes:
        n += await gov.record(None, shop, "after_sales", f"lost the dispute {case_id}",
                              source=f"dispute:{case_id}") is not None
    for rid, target, shop in reports:
        n += await gov.record(None, shop, "other", f"a report against its {target} was upheld",
                              source=f"report:{rid}") is not None
    return n
