"""A card in Redis only — its creator killed between writing Redis and committing SQL (found by
the multi-host rig: a host killed with -9 while a card was being created) — must not stop
reconcile from checking every other card."""

from __future__ import annotations

from live.commerce.inventory import CardState
from live.core import keys
from live.core.ids import new_id
from tests.flash_support import setup_sale
from tests.support import Api, RunningServer
from tests.test_recovery import live_cli


async def test_a_card_in_redis_only_does_not_stop_reconcile(server: RunningServer, api: Api) -> None:
    _, room, card = await setup_sale(api, stock=4)
    orphan = new_id()
    inventory = server.services.orders.inventory
    await inventory.init_card(orphan, CardState("on_sale", 3, 3, 1, 100, 0, 0, room["id"]))
    assert orphan in await inventory.active_cards()

    reports = {r["card_id"]: r for r in await server.services.orders.reconcile_all()}
    assert reports[card["id"]]["ok"], reports[card["id"]]
    assert reports[orphan]["ok"] and "redis only" in reports[orphan]["note"]

    # A real mismatch on the other card is still found, by the loop's check and by the command.
    await server.services.redis.hincrby(keys.card_state(card["id"]), "left", 5)
    reports = {r["card_id"]: r for r in await server.services.orders.reconcile_all()}
    assert not reports[card["id"]]["ok"]
    out = live_cli(server, "reconcile")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert "left 9 + active 0 != stock 4" in out.stdout and orphan in out.stdout, out.stdout
