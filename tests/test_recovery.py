"""Recovery: Redis data loss is rebuilt from SQL; `live reconcile` finds mismatches, `live rebuild` mends."""

from __future__ import annotations

import os
import subprocess
import sys

from live.core import keys
from tests.flash_support import rid, setup_sale
from tests.support import ROOT, Api, RunningServer


def live_cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
    env.update(LIVE_REDIS_URL=server.settings.redis_url, LIVE_DATABASE_URL=server.settings.database_url,
               LIVE_DATA_DIR=str(server.settings.data_dir), LIVE_LOG_LEVEL="WARNING")
    return subprocess.run([sys.executable, "-m", "live", *args], env=env, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=60)


async def test_card_state_rebuilt_after_redis_data_loss(server: RunningServer, api: Api) -> None:
    s, room, card = await setup_sale(api, stock=5, limit_per_user=2)
    a = await api.guest("a")
    req = rid()
    first = await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 2, "request_id": req}, token=a["token"])
    await server.services.orders.flush()
    # Redis loses every key of the card at once (e.g. restored from an old snapshot). One DEL:
    # key by key, the fence check could rebuild between two deletes and the test then half-lose it.
    redis = server.services.redis
    await redis.delete(*(k(card["id"]) for k in (keys.card_state, keys.card_bought, keys.card_requests,
                                                 keys.card_orders, keys.card_deadlines)))
    # A retry of the same request still returns the same order: rebuilt from SQL.
    again = await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 2, "request_id": req}, token=a["token"])
    assert again["order"]["id"] == first["order"]["id"] and again["left"] == 3
    status, body = await api.post(f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()},
                                  token=a["token"])
    assert body["error"]["code"] == "LIMIT_EXCEEDED"  # the limit survived the loss too
    audit = await api.ok("POST", f"/api/cards/{card['id']}/audit", json={"order_ids": [first["order"]["id"]]},
                         token=s["token"])
    assert audit["invariant_ok"], audit["problems"]


async def test_reconcile_and_rebuild_commands(server: RunningServer, api: Api) -> None:
    s, room, card = await setup_sale(api, stock=4)
    v = await api.guest()
    await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()}, token=v["token"])
    await server.services.orders.flush()
    ok = live_cli(server, "reconcile", "--card", card["id"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok  card" in ok.stdout
    # Corrupt the stock: the invariant breaks and the command says so.
    await server.services.redis.hincrby(keys.card_state(card["id"]), "left", 5)
    bad = live_cli(server, "reconcile", "--card", card["id"])
    assert bad.returncode == 1 and "left 8 + active 1 != stock 4" in bad.stdout, bad.stdout
    fixed = live_cli(server, "rebuild", card["id"])
    assert fixed.returncode == 0 and "invariant holds" in fixed.stdout, fixed.stdout + fixed.stderr
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["left"] == 3
