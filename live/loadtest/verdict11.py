"""The Double-11 rehearsal's verdict, from the server's own records.

``judge(scope, receiver)`` asks the server (admin-authorised HTTP: the per-card audit
``POST /api/cards/{id}/audit`` and the window audit ``POST /api/audit/window``) and returns one
``Check`` per promise:

- ``stock_invariant``: per card, left + units of orders still holding stock == stock (Redis and SQL
  agree), nothing oversold, nothing left waiting in the persister's stream;
- ``orders``: every acknowledged order is in SQL, and no (user, request id) made two orders;
- ``per_user_limits``: no user holds more than the card's limit;
- ``money``: per shop, paid − refunded of the window's orders == the shop ledger's sale and refund
  entries of those orders (and order by order);
- ``deadlines``: every after-sales deadline fired exactly once (none twice, none early, none
  overdue and not fired);
- ``webhooks``: every event the server emitted to a webhook of the scope reached the receiver at
  least once with a good signature; no unsigned, badly signed or unknown delivery; none failed;
- ``private_trading``: private-trading messages the server refused (its guard records) in the
  scope's rooms == what the driver saw refused, == the public disclosure's figure for the window.

The server converges (persister streams, the ledger sweeper, webhook retries, the chat stream),
so every check is asked again until it holds or ``timeout`` passes: a verdict waits for the truth,
it never passes on a guess. ``ok`` only when every check holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from live.loadtest.receiver import WebhookReceiver

CHECKS = ("stock_invariant", "orders", "per_user_limits", "money", "deadlines", "webhooks", "private_trading")
POLL_S = 0.5


@dataclass
class Scope:
    """What the rehearsal did, as the driver knows it: the judge checks it against the server."""

    base_url: str
    admin_token: str
    room_ids: list[str]
    card_ids: list[str]
    shop_ids: list[str]
    user_tokens: dict[str, str]  # streamer tokens by shop id
    started_at: float  # unix seconds: the window opens here
    acked_order_ids: dict[str, list[str]]  # by card: every order id a success ack named
    webhook_ids: list[str]
    chat_sent_private: int  # private-trading messages the server answered BLOCKED (reason private_trading)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    name: str
    ok: bool
    detail: dict[str, Any]
    phase: str = "end"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def passed(checks: list[Check]) -> bool:
    """The rehearsal's exit code is 0 only when this is True."""
    return bool(checks) and all(c.ok for c in checks)


class _Server:
    def __init__(self, http: aiohttp.ClientSession, scope: Scope) -> None:
        self.http = http
        self.scope = scope
        self.headers = {"Authorization": f"Bearer {scope.admin_token}"}

    async def post(self, path: str, payload: dict[str, Any]) -> Any:
        async with self.http.post(self.scope.base_url + path, json=payload, headers=self.headers) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"POST {path}: {r.status} {data}")
            return data

    async def get(self, path: str) -> Any:
        async with self.http.get(self.scope.base_url + path, headers=self.headers) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status} {data}")
            return data


async def _card_checks(server: _Server, scope: Scope) -> list[Check]:
    stock: dict[str, Any] = {}
    orders: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    ok_stock = ok_orders = ok_limits = True
    for card_id in scope.card_ids:
        acked = scope.acked_order_ids.get(card_id, [])
        a = await server.post(f"/api/cards/{card_id}/audit", {"order_ids": list(dict.fromkeys(acked))})
        held = int(a.get("sold_in_sql") or 0)
        stock[card_id] = {k: a.get(k) for k in ("stock", "left", "sold", "sold_in_sql", "oversold",
                                                 "pending_persist", "invariant_ok", "problems")}
        ok_stock &= (bool(a.get("invariant_ok")) and int(a.get("oversold") or 0) == 0
                     and not a.get("pending_persist") and a.get("left") is not None
                     and int(a["left"]) + held == int(a["stock"]))
        missing = list(a.get("missing_order_ids") or [])
        orders[card_id] = {"acked": len(acked), "distinct_acked": len(set(acked)), "missing": len(missing),
                           "missing_ids": missing[:20], "duplicate_orders": int(a.get("duplicate_orders") or 0)}
        ok_orders &= not missing and int(a.get("duplicate_orders") or 0) == 0
        limits[card_id] = {"over_limit_users": int(a.get("over_limit_users") or 0)}
        ok_limits &= int(a.get("over_limit_users") or 0) == 0
    return [Check("stock_invariant", ok_stock, {"cards": stock}),
            Check("orders", ok_orders, {"cards": orders}),
            Check("per_user_limits", ok_limits, {"cards": limits})]


def _money(m: dict[str, Any], scope: Scope) -> Check:
    shops = m.get("shops", {})
    unequal = {sid: v for sid, v in shops.items() if v["net_cents"] != v["ledger_cents"]}
    absent = [sid for sid in scope.shop_ids if sid not in shops]
    ok = not unequal and not absent and int(m.get("mismatched_orders", 0)) == 0
    return Check("money", ok, {"shops": shops, "unequal_shops": sorted(unequal), "absent_shops": absent,
                               "mismatched_orders": m.get("mismatched_orders"), "mismatched": m.get("mismatched")})


def _deadlines(d: dict[str, Any]) -> Check:
    ok = d.get("double_fired") == 0 and d.get("missed") == 0 and d.get("early") == 0
    return Check("deadlines", bool(ok), d)


def _webhooks(w: dict[str, Any], receiver: WebhookReceiver | None, final: bool = True) -> Check:
    """At the end every emitted event must have arrived; after a phase, delivery is still under
    way, so an event not yet received passes while the server still has that many deliveries
    pending (never failed ones, never a bad or unknown delivery)."""
    hooks: dict[str, Any] = {}
    ok = True
    for hook_id, h in w.items():
        if not h.get("found"):
            hooks[hook_id] = {"found": False}
            ok = False
            continue
        emitted: list[str] = list(h["event_ids"])
        failed = int(h["deliveries"].get("failed", 0))
        row: dict[str, Any] = {"emitted": len(emitted), "events_by_type": h["events_by_type"],
                               "not_fanned_out": h["not_fanned_out"], "server_deliveries": h["deliveries"]}
        if receiver is not None:
            got: Mapping[str, int] = receiver.counts.by_webhook.get(hook_id, {})
            missing = [e for e in emitted if e not in got]
            row.update({"received_events": sum(1 for e in emitted if e in got), "missing": len(missing),
                        "missing_ids": missing[:20]})
            pending = int(h["deliveries"].get("pending", 0))
            ok &= not missing or (not final and len(missing) <= pending)
            if missing and not final:
                row["in_flight"] = pending
        else:  # no receiver: only the server's own delivery log speaks
            row["source"] = "server delivery log only (no receiver)"
            ok &= int(h["deliveries"].get("pending", 0)) == 0 or not final
        ok &= failed == 0 and int(h["not_fanned_out"]) == 0
        hooks[hook_id] = row
    detail: dict[str, Any] = {"webhooks": hooks}
    if receiver is not None:
        c = receiver.counts
        detail["receiver"] = c.summary()
        ok &= c.unsigned == 0 and c.bad_signature == 0 and c.unknown == 0
    return Check("webhooks", ok, detail)


def _chat(c: dict[str, Any], scope: Scope, month: dict[str, Any] | None) -> Check:
    chat = int(c["private_trading_blocked_chat"])
    total = int(c["private_trading_blocked"])
    window = int(c["transparency_window"]["messages_blocked"])
    ok = chat == scope.chat_sent_private and window == total
    detail = {"driver_saw_blocked": scope.chat_sent_private, "server_blocked_chat": chat,
              "server_blocked_all_kinds": total, "transparency_window": c["transparency_window"],
              "by_room": c["by_room"]}
    if month is not None:  # the public month figure (cached up to 30 s on the server): shown, not judged
        detail["transparency_month"] = month.get("private_trading")
    return Check("private_trading", ok, detail)


async def _round(server: _Server, scope: Scope, receiver: WebhookReceiver | None,
                 want: set[str], phase: str = "end") -> list[Check]:
    out: list[Check] = []
    if want & {"stock_invariant", "orders", "per_user_limits"}:
        out += [c for c in await _card_checks(server, scope) if c.name in want]
    sections = [s for s, names in (("money", {"money"}), ("deadlines", {"deadlines"}),
                                   ("webhooks", {"webhooks"}), ("chat", {"private_trading"})) if want & names]
    if sections:
        w = await server.post("/api/audit/window", {
            "since": scope.started_at, "card_ids": scope.card_ids, "shop_ids": scope.shop_ids,
            "room_ids": scope.room_ids, "webhook_ids": scope.webhook_ids, "sections": sections})
        if "money" in w:
            out.append(_money(w["money"], scope))
        if "deadlines" in w:
            out.append(_deadlines(w["deadlines"]))
        if "webhooks" in w:
            out.append(_webhooks(w["webhooks"], receiver, final=phase == "end"))
        if "chat" in w:
            month = None
            with contextlib.suppress(RuntimeError, aiohttp.ClientError):
                month = await server.get("/api/transparency")
            out.append(_chat(w["chat"], scope, month))
    return out


async def judge(scope: Scope, receiver: WebhookReceiver | None, phase: str = "end",
                timeout: float = 60) -> list[Check]:
    """Every check of the rehearsal, each asked again until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    final: dict[str, Check] = {}
    want = set(CHECKS)
    rounds = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=max(30.0, timeout))) as http:
        server = _Server(http, scope)
        while want:
            rounds += 1
            try:
                checks = await _round(server, scope, receiver, want, phase)
            except (RuntimeError, aiohttp.ClientError, TimeoutError) as e:
                checks = [Check(name, False, {"error": f"{type(e).__name__}: {e}"}) for name in want]
            for c in checks:
                c.phase = phase
                c.detail["rounds"] = rounds
                final[c.name] = c
            want = {c.name for c in checks if not c.ok}
            if not want or time.monotonic() + POLL_S > deadline:
                break
            await asyncio.sleep(POLL_S)
    return [final[name] for name in CHECKS if name in final]
