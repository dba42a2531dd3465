"""Helpers for flash-buy tests: product photos and listing a card."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import aiohttp
from PIL import Image

from tests.support import Api


def photo(fmt: str = "PNG", size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    img = Image.new("RGB", size, color)
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


async def list_card(api: Api, token: str, room_id: str, *, price: str = "19.90", stock: int = 10,
                    image: bytes | None = None, expect: int = 201, **fields: Any) -> Any:
    """POST a card as multipart with a photo (the common way a studio lists a product)."""
    form = aiohttp.FormData()
    form.add_field("price", price)
    form.add_field("stock", str(stock))
    for k, v in fields.items():
        form.add_field(k, str(v))
    form.add_field("image", image if image is not None else photo(), filename="p.png", content_type="image/png")
    status, body = await api.post(f"/api/rooms/{room_id}/cards", data=form, token=token)
    assert status == expect, (status, body)
    return body


async def audit_once_persisted(api: Api, card_id: str, order_ids: list[str], token: str,
                               tries: int) -> dict[str, Any]:
    """The server's audit of a card, asked every 0.2 s (up to ``tries`` times) until nothing
    is left to persist; the last answer either way."""
    for _ in range(tries):
        audit: dict[str, Any] = await api.ok("POST", f"/api/cards/{card_id}/audit",
                                             json={"order_ids": order_ids}, token=token)
        if audit["pending_persist"] == 0:
            break
        await asyncio.sleep(0.2)
    return audit


def rid() -> str:
    return uuid.uuid4().hex


async def setup_sale(
    api: Api, *, stock: int = 10, **fields: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A streamer, a live room, and a card on sale: (streamer, room, card)."""
    s = await api.streamer()
    room = await api.live_room(s["token"])
    card = await list_card(api, s["token"], room["id"], stock=stock, **fields)
    return s, room, card
