"""The generated API documents: every route and event described, the documents valid, and real
responses matching the published schemas (the fuzz test, test_fuzz_api.py, goes further)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from live.transport.openapi import PUSHES
from tests.browser_support import DESKTOP, chromium, screenshot
from tests.flash_support import list_card
from tests.support import Api, RunningServer

# Routes not in the OpenAPI document, on purpose: HTML pages and their assets, Socket.IO's
# own transport, the document routes themselves, and the binary media protocols (WHIP/WHEP
# exchange SDP, HLS serves playlists and MPEG-TS segments: their specs are RFC 9725 / RFC 8216).
UNDESCRIBED = {
    ("GET", "/"), ("GET", "/room/{room_id}"), ("GET", "/studio"), ("GET", "/moderation"), ("GET", "/transparency"),
    ("GET", "/socket.io/"), ("POST", "/socket.io/"), ("OPTIONS", "/socket.io/"),
    ("GET", "/api/openapi.json"), ("GET", "/api/asyncapi.json"), ("GET", "/api/docs"),
    ("GET", "/api/docs.js"), ("GET", "/api/docs.css"),
    ("POST", "/api/rooms/{room_id}/whip"), ("DELETE", "/api/rooms/{room_id}/whip/{session}"),
    ("POST", "/api/rooms/{room_id}/whep"), ("DELETE", "/api/rooms/{room_id}/whep/{session}"),
    ("GET", "/live/{room_id}/{name}"),
}
UNDESCRIBED_PREFIXES = ("/static/",)
ROOT = Path(__file__).resolve().parent.parent


async def test_every_route_is_described(api: Api, server: RunningServer) -> None:
    doc = await api.ok("GET", "/api/openapi.json")
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    missing = []
    for route in server.app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        key = (route.method, route.resource.canonical)
        if key in described or key in UNDESCRIBED or key[1].startswith(UNDESCRIBED_PREFIXES):
            continue
        missing.append(key)
    assert not missing, f"routes without @api(...) (describe them, or list them in UNDESCRIBED): {missing}"
    assert not {k for k in UNDESCRIBED if k in described}


async def test_documents_are_valid(api: Api) -> None:
    doc = await api.ok("GET", "/api/openapi.json")
    assert doc["openapi"] == "3.1.0"
    # Every $ref resolves, and every component is a valid JSON Schema.
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', str(doc).replace("'", '"')))
    assert refs <= set(doc["components"]["schemas"]), refs - set(doc["components"]["schemas"])
    for s in doc["components"]["schemas"].values():
        jsonschema_rs.Draft202012Validator({**s, "components": doc["components"]})
    codes = doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
    assert {"INVALID", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "SOLD_OUT", "INTERNAL"} <= set(codes)
    # The request schema is the handler's own model: its limits are published.
    guest = doc["paths"]["/api/auth/guest"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = doc["components"]["schemas"][guest["$ref"].rsplit("/", 1)[-1]]["properties"]["name"]
    assert name["maxLength"] == 32
    # A path parameter the route's regex limits to a few words is published as an enum.
    decide = doc["paths"]["/api/moderation/applications/{app_id}/{decision}"]["post"]["parameters"]
    assert {p["name"]: p["schema"] for p in decide}["decision"] == {"enum": ["approve", "reject"]}
    held = {p["name"]: p for p in doc["paths"]["/api/moderation/held"]["get"]["parameters"]}
    assert held["status"]["schema"]["enum"] == ["held", "approved", "rejected", "expired", "all"]

    aa = await api.ok("GET", "/api/asyncapi.json")
    assert aa["asyncapi"] == "3.0.0"
    names = {m["name"] for m in aa["components"]["messages"].values()}
    assert {"room:join", "room:leave", "chat:send", "flash:buy", "lucky:enter"} <= names
    buy = aa["components"]["messages"]["flash_buy"]["payload"]
    assert set(aa["components"]["schemas"][buy["$ref"].rsplit("/", 1)[-1]]["required"]) == {"card_id", "request_id"}

    status, page = await api.get("/api/docs")
    assert status == 200 and b"/api/docs.js" in page


def test_every_push_is_in_the_asyncapi_document() -> None:
    emitted = set()
    for f in (ROOT / "live").rglob("*.py"):
        emitted |= set(re.findall(r'(?:to_room|to_user|deliver|emit)\([^()]*?"([a-z_]+:[a-z_]+)"', f.read_text()))
    emitted -= {n for n in emitted if n.startswith(("room:join", "room:leave"))}
    assert emitted, "the scan found no pushes"
    assert emitted <= set(PUSHES), f"pushes not described in live/transport/openapi.py PUSHES: {emitted - set(PUSHES)}"


def _validator(doc: dict[str, Any], path: str, method: str, status: int) -> Any:
    schema = doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


async def test_real_responses_match_the_published_schemas(api: Api, server: RunningServer) -> None:
    doc = await api.ok("GET", "/api/openapi.json")

    def check(path: str, method: str, status: int, body: Any) -> None:
        _validator(doc, path, method, status).validate(body)

    guest = await api.guest("g")
    check("/api/auth/guest", "post", 200, guest)
    s = await api.streamer()
    check("/api/auth/register", "post", 201, s)
    check("/api/me", "get", 200, await api.ok("GET", "/api/me", token=s["token"]))
    room = await api.ok("POST", "/api/rooms", json={"title": "t"}, token=s["token"])
    check("/api/rooms", "post", 201, room)
    await api.ok("POST", f"/api/rooms/{room['id']}/live", token=s["token"])
    check("/api/rooms/{room_id}", "get", 200, await api.ok("GET", f"/api/rooms/{room['id']}"))
    check("/api/rooms", "get", 200, await api.ok("GET", "/api/rooms"))
    check("/api/me/rooms", "get", 200, await api.ok("GET", "/api/me/rooms?status=live", token=s["token"]))
    check("/healthz", "get", 200, await api.ok("GET", "/healthz"))
    # A sale, a payment, an after-sales case: orders and cases as published.
    card = await list_card(api, s["token"], room["id"])
    check("/api/cards/{card_id}", "get", 200, await api.ok("GET", f"/api/cards/{card['id']}"))
    bought = await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"request_id": "r1"}, token=guest["token"])
    check("/api/cards/{card_id}/buy", "post", 200, bought)
    oid = bought["order"]["id"]
    check("/api/orders/{order_id}/pay", "post", 200,
          await api.ok("POST", f"/api/orders/{oid}/pay", token=guest["token"]))
    check("/api/me/orders", "get", 200, await api.ok("GET", "/api/me/orders", token=guest["token"]))
    case = await api.ok("POST", f"/api/orders/{oid}/after-sales", json={"kind": "refund_only", "reason": "broken"},
                        token=guest["token"])
    check("/api/orders/{order_id}/after-sales", "post", 201, case)
    check("/api/after-sales/{case_id}", "get", 200,
          await api.ok("GET", f"/api/after-sales/{case['id']}", token=guest["token"]))
    check("/api/shop/after-sales", "get", 200, await api.ok("GET", "/api/shop/after-sales", token=s["token"]))
    step = await api.ok("POST", f"/api/after-sales/{case['id']}/approve", json={}, token=s["token"])
    check("/api/after-sales/{case_id}/{step}", "post", 200, step)
    mod = server.settings.admin_token
    check("/api/moderation/held", "get", 200, await api.ok("GET", "/api/moderation/held", token=mod))
    report = await api.ok("POST", "/api/reports", json={"target": "room", "target_id": room["id"], "reason": "spam"},
                          token=guest["token"])
    check("/api/reports", "post", 201, report)
    check("/api/reports", "get", 200, await api.ok("GET", "/api/reports", token=mod))
    check("/api/reports/{report_id}/resolve", "post", 200,
          await api.ok("POST", f"/api/reports/{report['id']}/resolve", json={"action": "dismiss"}, token=mod))
    bag = await api.ok("POST", f"/api/rooms/{room['id']}/lucky-bags", token=s["token"],
                       json={"title": "bag", "winners": 1, "duration_s": 60, "condition": "present"})
    check("/api/rooms/{room_id}/lucky-bags", "post", 201, bag)
    check("/api/rooms/{room_id}/lucky-bags", "get", 200, await api.ok("GET", f"/api/rooms/{room['id']}/lucky-bags"))
    check("/api/lucky-bags/{bag_id}", "get", 200, await api.ok("GET", f"/api/lucky-bags/{bag['id']}"))
    check("/api/me/notifications", "get", 200, await api.ok("GET", "/api/me/notifications", token=guest["token"]))
    # Errors: the one Error schema, with a contract code.
    bad: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/me", {}), ("POST", "/api/rooms", {"json": {"title": 5}, "token": s["token"]}),
        ("GET", "/api/rooms/nope", {}), ("GET", "/api/me/rooms?status=x", {"token": s["token"]})]
    for method, path, kw in bad:
        status, body = await api.request(method, path, **kw)
        assert 400 <= status < 500
        err = doc["paths"][path.split("?")[0] if "nope" not in path else "/api/rooms/{room_id}"][method.lower()]
        jsonschema_rs.Draft202012Validator({**err["responses"]["4XX"]["content"]["application/json"]["schema"],
                                            "components": doc["components"]}).validate(body)


@pytest.mark.browser
async def test_reference_page_renders_every_operation(api: Api, server: RunningServer) -> None:
    doc = await api.ok("GET", "/api/openapi.json")
    n_ops = sum(len(ops) for ops in doc["paths"].values())
    async with chromium(server.url) as pages:
        page = await pages.open("/api/docs", DESKTOP)
        await page.wait_for_selector("details.op", timeout=15_000)
        assert await page.locator("details.op").count() == n_ops
        await page.locator("details.op").first.click()
        assert await page.locator("#schema-Error").count() == 1
        await screenshot(page, "api-docs")
    assert not pages.errors, pages.errors  # the page's CSP lets its own script and the fetches through
