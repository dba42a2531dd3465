"""The shapes orders and cases take in Redis and on the wire, shared by every commerce module.

Its own module, importing no other commerce module: flash-buy, orders and the after-payment
modules all read these, and flash-buy builds the order service, so keeping them in
``flashbuy`` made an import cycle (tests/test_layout.py forbids one).

The compact JSON kept in a card's Redis hashes is written by Lua (``buy.lua`` creates an order,
``after_lib.lua`` documents the fields the after-sales scripts add); ``parse_order`` and
``parse_case`` are the one place where that JSON becomes a typed value. Numbers are read
through ``int()`` where they are used: cjson may write a large number in exponent form, which
parses as a float.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, cast

import orjson

from live.core.errors import NotFound
from live.core.ids import iso_ms

FENCED_MESSAGE = "this product is being re-checked after a storage fault; retry shortly"


class Shipment(TypedDict):
    """``sh`` of an order, ``rs`` of a case: carrier, tracking number, when (ms)."""

    c: str
    t: str
    at: int


# An order as ``buy.lua`` writes it, plus what the after-sales scripts add (after_lib.lua). The
# functional form because one key, ``as`` (the current case id), is a Python keyword.
CompactOrder = TypedDict("CompactOrder", {
    "id": str,
    "u": str,  # buyer
    "q": int,  # units
    "a": int,  # amount, cents
    "s": str,  # status
    "c": int,  # created, ms
    "p": int,  # pay by, ms
    "r": NotRequired[str],  # the buyer's request id
    "v": NotRequired[int],  # version (after-sales scripts bump it on each change)
    "pa": NotRequired[int],  # charged cents
    "ra": NotRequired[int],  # refunded cents
    "sr": NotRequired[int],  # 1 once its units went back
    "sh": NotRequired[Shipment],
    "as": NotRequired[str],  # the current after-sales case
    "nc": NotRequired[int],  # cases opened
    "pt": NotRequired[int],  # paid, ms
    "cp": NotRequired[int],  # completed, ms
    "rt": NotRequired[int],  # refunded, ms
})


class CaseStep(TypedDict):
    s: str  # status entered
    by: str
    at: int
    n: NotRequired[str]  # note


class CompactCase(TypedDict):
    """An after-sales case as the after-sales scripts keep it (after_open.lua, after_case.lua)."""

    id: str
    o: str  # order id
    u: str  # buyer
    st: str  # streamer
    k: str  # kind
    s: str  # status
    r: str  # reason
    a: int  # amount, cents
    c: int  # created, ms
    d: NotRequired[int]  # deadline, ms (0: none)
    x: NotRequired[int]  # resolved, ms
    rs: NotRequired[Shipment]  # the return shipment
    h: list[CaseStep]
    v: int


def parse_order(raw: str | bytes) -> CompactOrder:
    """A compact order from its Redis JSON (the one cast: Lua wrote it)."""
    return cast(CompactOrder, orjson.loads(raw))


def parse_case(raw: str | bytes) -> CompactCase:
    """A compact case from its Redis JSON (the one cast: Lua wrote it)."""
    return cast(CompactCase, orjson.loads(raw))


def money(cents_: int) -> str:
    return f"{cents_ // 100}.{cents_ % 100:02d}"


def order_view(card_id: str, o: CompactOrder) -> dict[str, Any]:
    """The contract's order object from the compact form kept in Redis."""
    sh = o.get("sh")
    cp = o.get("cp")
    return {
        "id": o["id"],
        "card_id": card_id,
        "user_id": o["u"],
        "qty": int(o["q"]),
        "amount": money(int(o["a"])),
        "status": o["s"],
        "created_at": iso_ms(int(o["c"])),
        "pay_by": iso_ms(int(o["p"])),
        "request_id": o.get("r"),
        # After payment (v2): fields the after-sales scripts add to the compact order.
        "shipment": ({"carrier": sh["c"], "tracking_no": sh["t"], "shipped_at": iso_ms(int(sh["at"]))}
                     if sh else None),
        "paid_amount": money(int(o.get("pa", 0))),
        "refunded_amount": money(int(o.get("ra", 0))),
        "stock_returned": bool(o.get("sr")) or o["s"] in ("cancelled", "expired"),
        "after_sale_id": o.get("as"),
        "completed_at": iso_ms(int(cp)) if cp else None,
    }


def card_of_order(order_id: str) -> str:
    """Order ids are ``<card id>-<12 hex>``: the card (and so its Redis slot) is in the id."""
    card_id, sep, tail = order_id.rpartition("-")
    if not sep or not card_id or len(tail) != 12 or len(order_id) > 64:
        raise NotFound("no such order")
    return card_id
