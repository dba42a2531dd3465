"""Edge validation: every input the server cannot store or understand gets the contract's
INVALID (never a 500), changes nothing and creates nothing; names are canonical; pages and API
answers carry security headers; a client hanging up is not a server error."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from sqlalchemy.exc import OperationalError

from live.core.errors import backend_unavailable
from live.core.settings import Settings
from tests.flash_support import list_card, photo, rid, setup_sale
from tests.support import Api, RunningServer, SioClient, run_app

pytestmark = pytest.mark.timeout(120)
ADMIN = "test-admin-token"
NUL = "x\x00y"
# Every string field any route reads (a NUL in any of them must be refused before it reaches SQL).
BODY = {k: NUL for k in ("name", "username", "password", "title", "text", "room_id", "user_id", "reason",
                         "target", "target_id", "request_id", "code", "price", "role", "action", "status")}


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", quote(value, safe=""), path)


def _routes(server: RunningServer) -> list[tuple[str, str]]:
    """(method, path) of every API route. A parameter the route's own pattern limits to a few
    words (``{decision:approve|reject}``) is written out as its first word: a NUL there matches
    no route at all (404), it never reaches a handler, so only free parameters are probed."""
    seen = []
    for route in server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path")
        if not path or route.method in ("HEAD", "*") or path.startswith(("/socket.io", "/static")):
            continue
        pattern = info.get("pattern")
        if pattern is not None:
            for name, words in re.findall(r"\(\?P<(\w+)>([\w|]+)\)", pattern.pattern):
                path = path.replace("{" + name + "}", words.split("|")[0])
        seen.append((route.method, path))
    return seen


async def test_a_nul_anywhere_is_invalid_on_every_route(api: Api, server: RunningServer) -> None:
    s, room, card = await setup_sale(api, stock=3)
    viewer = await api.guest()
    order = await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()},
                         token=viewer["token"])
    real = {"room_id": room["id"], "card_id": card["id"], "order_id": order["order"]["id"],
            "user_id": viewer["user"]["id"]}
    routes = _routes(server)
    assert len(routes) > 30
    for method, path in routes:
        # 1. In a path parameter (and the others real): INVALID before anything runs.
        if "{" in path:
            status, body = await api.request(method, _fill(path, NUL), token=ADMIN)
            assert (status, body["error"]["code"]) == (400, "INVALID"), (method, path, status, body)
        concrete = re.sub(r"\{([^}]+)\}", lambda m: real.get(m.group(1), "nosuch"), path)
        # 2. In the query string.
        status, body = await api.request(method, concrete + "?status=" + quote(NUL), token=ADMIN)
        assert (status, body["error"]["code"]) == (400, "INVALID"), (method, path, status, body)
        # 3. In every string field of a JSON body: never a 500; refused as INVALID if read.
        if method == "POST":
            status, body = await api.request(method, concrete, json=BODY, token=ADMIN)
            assert status < 500, (method, path, status, body)
            if status == 400:
                assert body["error"]["code"] == "INVALID", (method, path, body)
    # The ones that read those fields say which one.
    for path, payload in (("/api/auth/guest", {"name": NUL}),
                          ("/api/auth/register", {"username": "nul_user", "password": "pass\x00word1"}),
                          ("/api/auth/login", {"username": "nul\x00", "password": "whatever1"}),
                          ("/api/rooms", {"title": NUL}),
                          ("/api/reports", {"target": "room", "target_id": room["id"], "reason": NUL}),
                          (f"/api/cards/{card['id']}/buy", {"qty": 1, "request_id": NUL})):
        token = s["token"] if path == "/api/rooms" else viewer["token"]
        status, body = await api.post(path, json=payload, token=token)
        assert (status, body["error"]["code"]) == (400, "INVALID"), (path, body)
    # A card title with a NUL (multipart) never reaches SQL, where it would be dead-lettered.
    body = await list_card(api, s["token"], room["id"], title=NUL, expect=400)
    assert body["error"]["code"] == "INVALID"
    # Nothing was sold by all this but the one order.
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["left"] == 2


async def test_a_nul_in_a_socket_event_is_an_invalid_ack(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    c = SioClient()
    await c.connect(server.url, (await api.guest())["token"])
    try:
        bad = await c.call("room:join", {"room_id": room["id"] + "\x00"})
        assert bad["ok"] is False and bad["error"]["code"] == "INVALID"
        assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
        bad = await c.call("chat:send", {"room_id": room["id"], "text": "hi\x00"})
        assert bad["ok"] is False and bad["error"]["code"] == "INVALID"
        assert (await c.call("chat:send", {"room_id": room["id"], "text": "hi"}))["ok"]
    finally:
        await c.close()


STARTS_AT = [1e20, -1e20, 2**63, "9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z", "inf", "nan", "1e400"]
PRICES = ["١٢", "1_000", "1e3", "１２", " 12 3", "12.345", "-1", "0", "NaN", "Infinity"]
MULTIPART = [
    b"--B\r\nContent-Disposition: form-data; name=\"price\"\r\n\r\n12\r\n",          # no closing boundary
    b"--B\r\nContent-Disposition: form-data; name=\"price\"\r\n\r\n12",               # cut mid-part
    b"garbage without any boundary",
    b"--B\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n\xff\xfe\r\n--B--\r\n",  # not UTF-8
]


async def test_card_fields_that_once_answered_500_are_invalid(api: Api, server: RunningServer) -> None:
    """starts_at out of range, prices in other digits, multipart without a (closing) boundary:
    each INVALID (one server for all the cases: they are many and each is one request)."""
    s = await api.streamer()
    room = await api.live_room(s["token"])
    path = f"/api/rooms/{room['id']}/cards"
    for starts_at in STARTS_AT:
        status, body = await api.post(path, token=s["token"], headers={"Content-Type": "application/json"},
                                      data=orjson.dumps({"price": "9.90", "stock": 3, "snapshot": True,
                                                         "starts_at": starts_at}))
        assert (status, body["error"]["code"]) == (400, "INVALID"), (starts_at, body)
        body = await list_card(api, s["token"], room["id"], starts_at=starts_at, expect=400)
        assert body["error"]["code"] == "INVALID", starts_at
    for price in PRICES:
        body = await list_card(api, s["token"], room["id"], price=price, expect=400)
        assert body["error"]["code"] == "INVALID", price
    body = await list_card(api, s["token"], room["id"], price="12", stock="١٢", expect=400)  # type: ignore[arg-type]
    assert body["error"]["code"] == "INVALID"
    for raw in MULTIPART:
        for ctype in ("multipart/form-data; boundary=B", "multipart/form-data"):  # and no boundary at all
            status, body = await api.post(path, token=s["token"], data=raw, headers={"Content-Type": ctype})
            assert (status, body["error"]["code"]) == (400, "INVALID"), (raw, ctype, body)
    assert not (await api.ok("GET", f"/api/rooms/{room['id']}")).get("cards")  # nothing was created
    assert (await list_card(api, s["token"], room["id"], price=" 12.5 "))["price"] == "12.50"


async def test_usernames_are_unique_after_nfkc_and_casefold(api: Api, server: RunningServer) -> None:
    pw = "a-good-password"
    await api.ok("POST", "/api/auth/register", json={"username": "Alice_ed", "password": pw})
    for twin in ("alice_ed", "ALICE_ED", "Alice_Ed"):
        status, body = await api.post("/api/auth/register", json={"username": twin, "password": pw})
        assert (status, body["error"]["code"]) == (409, "CONFLICT"), twin
    # Signing in with any spelling of the name finds the one account.
    assert (await api.ok("POST", "/api/auth/login", json={"username": "alice_ED", "password": pw}))["user"]["name"] \
        == "Alice_ed"
    for reserved in ("admin", "Admin", "moderator", "SYSTEM", "_admin_"):
        status, body = await api.post("/api/auth/register", json={"username": reserved, "password": pw})
        assert (status, body["error"]["code"]) == (400, "INVALID"), reserved


async def test_guest_names_refuse_invisible_bidi_and_reserved(api: Api, server: RunningServer) -> None:
    for name in ("\u202eevil", "a\u200bb", "x\u2066y", "\ufeffbom", "Admin", "ａｄｍｉｎ", "管理员", "tab\there"):
        status, body = await api.post("/api/auth/guest", json={"name": name})
        assert (status, body["error"]["code"]) == (400, "INVALID"), (name, body)
    assert (await api.ok("POST", "/api/auth/guest", json={"name": "小明 Ming"}))["user"]["name"] == "小明 Ming"


async def test_security_headers_on_pages_and_api(api: Api, server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/studio", "/moderation", "/api/rooms", "/healthz", "/api/cards/nosuch"):
            async with session.get(server.url + path) as r:
                h = r.headers
                assert h["X-Content-Type-Options"] == "nosniff", path
                assert h["Referrer-Policy"] == "same-origin", path
                csp = h["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in csp, path
                if r.content_type == "text/html":
                    assert "script-src 'self' 'sha256-" in csp and "'unsafe-inline'" not in csp, path
                else:
                    assert csp.startswith("default-src 'none'"), path


async def test_client_disconnects_are_not_internal_errors_and_slow_bodies_time_out(
        settings_factory: Callable[..., Settings]) -> None:
    async with run_app(settings_factory(http_body_timeout_s=0.5)) as srv, Api(srv.url) as api:
        s = await api.streamer()
        host, port = srv.url.removeprefix("http://").split(":")
        head = (f"POST /api/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {s['token']}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"title\":").encode()
        # A body that never completes: INVALID once the body deadline passes.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read(4096)
        assert b" 400 " in answer.split(b"\r\n")[0] and b"did not arrive in time" in answer
        writer.close()
        # A client that hangs up mid-body: no INTERNAL error, no traceback.
        for _ in range(5):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(head)
            await writer.drain()
            writer.close()
        await asyncio.sleep(0.3)
        status, metrics = await api.get("/metrics")
        assert b'code="INTERNAL"' not in metrics
        assert b'live_limits_refused_total{limit="http_body_timeout"}' in metrics
    assert backend_unavailable(OperationalError("SELECT 1", {}, Exception("connection refused")))
    assert backend_unavailable(ConnectionRefusedError())
    assert not backend_unavailable(ValueError())


async def test_photo_route_still_works(api: Api, server: RunningServer) -> None:
    """The headers middleware leaves binary answers intact."""
    s = await api.streamer()
    room = await api.live_room(s["token"])
    card = await list_card(api, s["token"], room["id"], image=photo())
    async with aiohttp.ClientSession() as session, session.get(server.url + card["image_url"]) as r:
        assert r.status == 200 and r.content_type == "image/jpeg" and (await r.read())[:2] == b"\xff\xd8"


async def test_the_load_testers_audit_waits_out_a_redis_restart(settings_factory: Callable[..., Settings]) -> None:
    """After a fault the server answers 503 for a while: the load tester waits (bounded) for its
    audit instead of aborting, and with nobody answering at all it still gets to write a report."""
    from live.loadtest.api import Backend
    from live.loadtest.scenarios import server_verdict
    from live.loadtest.worker import Samples
    from tests.support import RedisServer, free_port

    redis = RedisServer(appendonly=True)
    redis.start()
    try:
        async with run_app(settings_factory(redis_url=redis.url)) as srv, Api(srv.url) as api, \
                aiohttp.ClientSession() as http:
            s, _, card = await setup_sale(api, stock=3)
            buyer = await api.guest()
            order = (await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()},
                                  token=buyer["token"]))["order"]
            backend = Backend(srv.url, http)
            backend.streamer_token = s["token"]
            assert redis.proc is not None
            redis.proc.terminate()
            redis.proc.wait(10)
            status, body = await api.post(f"/api/cards/{card['id']}/audit", json={"order_ids": []},
                                          token=s["token"])
            assert (status, body["error"]["code"]) == (503, "UNAVAILABLE")

            async def restart() -> None:
                await asyncio.sleep(1.5)
                await asyncio.to_thread(redis.start)

            restarting = asyncio.create_task(restart())
            audit = await backend.audit(card["id"], [order["id"]], timeout=30)
            await restarting
            assert audit is not None and audit["sold"] == 1 and not audit["missing_order_ids"], audit
            assert backend.audit_problem == ""
        # A server that never answers: bounded, and the verdict says why it is unknown.
        async with aiohttp.ClientSession() as http:
            gone = Backend(f"http://127.0.0.1:{free_port()}", http)
            verdict = await server_verdict(gone, "card", 3, Samples(), timeout=1.5)
        assert verdict["verdict"] == "unknown" and "did not answer its audit" in verdict["verdict_source"]
    finally:
        redis.stop()


@pytest.mark.skipif(not os.environ.get("LIVE_TEST_DATABASE_URL", "").startswith("postgresql"),
                    reason="cuts a TCP proxy in front of PostgreSQL: runs in the PostgreSQL pass of `make test`")
async def test_a_database_outage_is_unavailable_on_http_and_socket_alike(
        settings_factory: Callable[..., Settings], database: Any, caplog: pytest.LogCaptureFixture) -> None:
    from urllib.parse import urlparse

    from tests.support import free_port
    from tests.tcpproxy import TcpProxy

    target = urlparse(database.url().replace("postgresql+asyncpg", "postgresql"))
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432, free_port())
    await proxy.start()
    proxied = database.url().replace(f"{target.hostname}:{target.port or 5432}", f"127.0.0.1:{proxy.port}")
    try:
        async with run_app(settings_factory(database_url=proxied)) as srv, Api(srv.url) as api:
            c = SioClient()
            await c.connect(srv.url, (await api.guest())["token"])
            await proxy.cut()
            caplog.clear()
            # Rooms not in the process's cache: their snapshot needs SQL.
            status, body = await api.get("/api/rooms/not-cached-1")
            assert (status, body["error"]["code"]) == (503, "UNAVAILABLE"), body
            ack = await c.call("room:join", {"room_id": "not-cached-2"}, timeout=30)
            assert ack["ok"] is False and ack["error"]["code"] == "UNAVAILABLE", ack
            assert c.sio.connected
            assert not [r for r in caplog.records if r.exc_info], "a backend outage logs no traceback"
            await proxy.restore()
            await c.close()
            status, metrics = await api.get("/metrics")
            assert b'code="INTERNAL"' not in metrics
    finally:
        await proxy.cut()


async def test_migration_0003_keeps_old_colliding_usernames_working(settings_factory: Callable[..., Settings]) -> None:
    """An older database with ``Alice`` and ``alice`` migrates: the older account keeps the
    canonical name, both still sign in with their own spelling, and nobody can add a third."""
    from datetime import UTC, datetime, timedelta

    from alembic import command
    from argon2 import PasswordHasher
    from sqlalchemy import text

    from live.core import db as dbmod
    from tests.support import TestDatabase

    fresh = TestDatabase()
    await asyncio.to_thread(fresh.create)  # it runs its own event loop for PostgreSQL
    try:
        url = fresh.url()
        engine = dbmod.make_engine(url)

        def to_0001(conn: Any) -> None:
            cfg = dbmod.alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")

        async with engine.begin() as conn:
            await conn.run_sync(to_0001)
            t = datetime.now(UTC)
            olds = (("u1", "Alice", "first-password"), ("u2", "alice", "second-password"),
                    ("u3", "bob", "third-password"))
            for i, (uid, name, pw) in enumerate(olds):
                await conn.execute(text("INSERT INTO users (id, username, name, role, password_hash, created_at) "
                                        "VALUES (:id, :u, :u, 'viewer', :h, :t)"),
                                   {"id": uid, "u": name, "h": PasswordHasher().hash(pw),
                                    "t": t + timedelta(seconds=i)})
        await dbmod.migrate(engine)  # to head, through 0003
        async with engine.connect() as conn:
            rows = dict((await conn.execute(text("SELECT id, username_canonical FROM users"))).all())
        await engine.dispose()
        assert rows == {"u1": "alice", "u2": None, "u3": "bob"}
        async with run_app(settings_factory(database_url=url)) as srv, Api(srv.url) as api:
            for name, pw, uid in (("Alice", "first-password", "u1"), ("alice", "second-password", "u2"),
                                  ("BOB", "third-password", "u3")):
                signed_in = await api.ok("POST", "/api/auth/login", json={"username": name, "password": pw})
                assert signed_in["user"]["id"] == uid
            status, body = await api.post("/api/auth/register", json={"username": "ALICE", "password": "x" * 10})
            assert (status, body["error"]["code"]) == (409, "CONFLICT")
    finally:
        await asyncio.to_thread(fresh.drop)


@pytest.mark.parametrize("payload, where", [
    ({"card_id": "c1", "qty": 1, "note": "a\x00b"}, "payload.note"),     # flat: the quick look
    ({"card_id": "c1", "k\ud800": 1}, "payload"),                         # a key
    ({"items": [{"text": "ok"}, {"text": "\ud83d"}]}, "payload.items.text"),  # nested: the walk
])
def test_check_storable_names_where_an_unstorable_string_is(payload: dict[str, Any], where: str) -> None:
    from live.core.errors import Invalid
    from live.transport.http import check_storable

    check_storable({"card_id": "c1", "qty": 1, "ok": True, "none": None, "price": 1.5}, "payload")
    with pytest.raises(Invalid) as e:
        check_storable(payload, "payload")
    assert e.value.message.startswith(f"{where}:")
