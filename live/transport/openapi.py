"""The API described from the code that serves it: OpenAPI 3.1 at ``/api/openapi.json``,
the Socket.IO events as AsyncAPI 3.0 at ``/api/asyncapi.json``, and a reference page at
``/api/docs``.

Nothing here is kept by hand: operations come from the aiohttp router and the ``@api``
description on each handler (``live.transport.http.ApiSpec``), Socket.IO operations from
``SocketApp.event`` registrations, and every schema from the pydantic models those handlers
validate with (``TypeAdapter.json_schemas``, one ``components.schemas`` for all).
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter

from live.core import errors
from live.transport.http import ApiSpec, json_response, spec_of
from live.transport.pages import web_dir
from live.transport.schemas import CardOut, Error, Obj, OrderOut
from live.transport.sio import SocketApp

REF = "#/components/schemas/{model}"
JSON = "application/json"
OPENAPI_KEY = web.AppKey("openapi_doc", dict)
ASYNCAPI_KEY = web.AppKey("asyncapi_doc", dict)

# Server → client pushes (``Pusher.to_room`` / ``to_user``): name → (payload type, summary).
# tests/test_openapi.py checks every push name emitted in ``live/`` is listed here.
PUSHES: dict[str, tuple[Any, str]] = {
    "room:viewers": (Obj, "the room's viewer count, coalesced"),
    "room:status": (Obj, "the room went live or ended"),
    "room:kicked": (Obj, "this connection was removed from a room (a ban)"),
    "chat:message": (Obj, "a chat message in the room"),
    "chat:deleted": (Obj, "a message was deleted by moderation"),
    "chat:slowmode": (Obj, "the room's slow-mode interval changed"),
    "chat:held": (Obj, "your message is held for review by the guard"),
    "flash:card": (CardOut, "a card was listed or changed"),
    "flash:pin": (Obj, "the pinned card changed"),
    "flash:status": (Obj, "a card's sale status changed"),
    "flash:stock": (Obj, "a card's stock left, coalesced"),
    "order:update": (OrderOut, "one of your orders changed (paid, cancelled, expired)"),
    "lucky:open": (Obj, "a lucky bag opened in the room"),
    "lucky:drawn": (Obj, "a lucky bag was drawn: winners and the proof"),
    "lucky:entered": (Obj, "your entry into a lucky bag was accepted"),
    "lucky:refused": (Obj, "your entry into a lucky bag was refused"),
    "notify:live": (Obj, "a streamer you follow went live"),
}


def error_codes() -> list[str]:
    """Every contract code a response can carry: the ``LiveError`` tree and the middleware's own."""
    seen: set[str] = {"INTERNAL", "UNAVAILABLE", "RATE_LIMITED", "CONFLICT"}
    todo: list[type[errors.LiveError]] = [errors.LiveError]
    while todo:
        cls = todo.pop()
        seen.add(cls.code)
        todo.extend(cls.__subclasses__())
    return sorted(seen)


def _version() -> str:
    try:
        return version("live-commerce")
    except PackageNotFoundError:
        return "0"


def _schemas(entries: list[tuple[Any, str, Any]]) -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    """One JSON Schema per (key, mode, type), with shared definitions under components."""
    keyed = [(key, mode, TypeAdapter(t)) for key, mode, t in entries]
    mapping, defs = TypeAdapter.json_schemas(keyed, ref_template=REF)  # type: ignore[arg-type]
    out = {key: schema for (key, _mode), schema in mapping.items()}
    components = dict(defs.get("$defs", {}))
    body = components.get("ErrorBody")
    if body is not None:
        body["properties"]["code"]["enum"] = error_codes()
    return out, components


def _operation_id(handler: Any) -> str:
    module = str(handler.__module__).rsplit(".", 1)[-1].removeprefix("routes_")
    return f"{module}_{handler.__name__}"


def build_openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every described route of ``app``."""
    ops: list[tuple[str, str, ApiSpec, Any]] = []
    choices: dict[str, dict[str, list[str]]] = {}
    for route in app.router.routes():
        spec = spec_of(route.handler)
        if spec is None or route.method == "HEAD" or route.resource is None:
            continue
        ops.append((route.resource.canonical, route.method.lower(), spec, route.handler))
        choices[route.resource.canonical] = _path_choices(route.resource.get_info())
    entries: list[tuple[Any, str, Any]] = [("Error", "serialization", Error)]
    for i, (_, _, spec, _) in enumerate(ops):
        if spec.request is not None:
            entries.append(((i, "request"), "validation", spec.request))
        if spec.query is not None:
            entries.append(((i, "query"), "validation", spec.query))
        for status, t in spec.responses.items():
            if t is not None:
                entries.append(((i, status), "serialization", t))
    schemas, components = _schemas(entries)
    error_ref = schemas["Error"]
    paths: dict[str, dict[str, Any]] = {}
    for i, (path, method, spec, handler) in enumerate(ops):
        op: dict[str, Any] = {"operationId": _operation_id(handler), "summary": spec.summary, "tags": [spec.tag]}
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True,
             "schema": ({"enum": choices[path][name]} if name in choices.get(path, {})
                        else {"type": "string", "minLength": 1})}
            for name in _path_params(path)]
        if spec.query is not None:
            q = schemas[(i, "query")]
            q = components.get(q["$ref"].rsplit("/", 1)[-1], q) if "$ref" in q else q
            required = set(q.get("required", []))
            for name, s in q.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in required, "schema": s})
        if params:
            op["parameters"] = params
        if spec.auth == "bearer":
            op["security"] = [{"bearer": []}]
        elif spec.auth == "optional":
            op["security"] = [{"bearer": []}, {}]
        if spec.request is not None:
            content = {JSON: {"schema": schemas[(i, "request")]}}
            if spec.form:
                content["multipart/form-data"] = {"schema": {
                    "allOf": [schemas[(i, "request")],
                              {"type": "object", "properties": {"image": {"type": "string",
                                                                          "contentMediaType": "image/jpeg"}}}]}}
            # An empty body is read as {} (read_json), so the body itself is optional.
            op["requestBody"] = {"required": False, "content": content}
        elif spec.request_media is not None:
            op["requestBody"] = {"required": True, "content": {spec.request_media: {"schema": {"type": "string"}}}}
        responses: dict[str, Any] = {}
        for status, t in spec.responses.items():
            r: dict[str, Any] = {"description": spec.summary}
            if t is not None:
                r["content"] = {JSON: {"schema": schemas[(i, status)]}}
            elif spec.media is not None and status < 300:
                r["content"] = {spec.media: {"schema": {"type": "string"}}}
            responses[str(status)] = r
        responses["4XX"] = {"description": "the contract's error", "content": {JSON: {"schema": error_ref}}}
        responses["503"] = {"description": "a backend is unavailable; retry",
                            "content": {JSON: {"schema": error_ref}}}
        op["responses"] = responses
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "live-commerce", "version": _version(),
                 "description": "Generated from the route handlers and their pydantic models; "
                                "the Socket.IO events are in /api/asyncapi.json."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(components.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "a token from /api/auth/*"}}},
    }


def _path_choices(info: Any) -> dict[str, list[str]]:
    """Path parameters the route's own regex limits to a few words (``{decision:approve|reject}``)."""
    pattern = info.get("pattern")
    if pattern is None:
        return {}
    out = {}
    for name, regex in re.findall(r"\(\?P<(\w+)>([^()]*)\)", pattern.pattern):
        if re.fullmatch(r"[\w-]+(\|[\w-]+)*", regex):
            out[name] = regex.split("|")
    return out


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":", 1)[0] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def build_asyncapi(socket_app: SocketApp) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the Socket.IO events: client emits with their acks, and pushes."""
    entries: list[tuple[Any, str, Any]] = [("Error", "serialization", Error)]
    for name, (model, _) in socket_app.events.items():
        if model is not None:
            entries.append(((name, "payload"), "validation", model))
    for name, (t, _) in PUSHES.items():
        entries.append(((name, "push"), "serialization", t))
    schemas, components = _schemas(entries)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name, (model, summary) in sorted(socket_app.events.items()):
        key = name.replace(":", "_")
        payload = schemas[(name, "payload")] if model is not None else {}
        messages[key] = {"name": name, "summary": summary, "payload": payload}
        messages[key + "_ack"] = {
            "name": f"{name} ack", "summary": 'the acknowledgement: {"ok": true, ...result} or {"ok": false, "error"}',
            "payload": {"oneOf": [
                {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}},
                 "additionalProperties": True},
                {"type": "object", "required": ["ok", "error"],
                 "properties": {"ok": {"const": False}, "error": {"$ref": "#/components/schemas/ErrorBody"}}}]}}
        channels[key] = {"address": name, "messages": {name: {"$ref": f"#/components/messages/{key}"},
                                                       "ack": {"$ref": f"#/components/messages/{key}_ack"}}}
        operations[key] = {
            "action": "receive", "summary": summary, "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{name}"}],
            "reply": {"channel": {"$ref": f"#/channels/{key}"},
                      "messages": [{"$ref": f"#/channels/{key}/messages/ack"}]}}
    for name, (_, summary) in sorted(PUSHES.items()):
        key = name.replace(":", "_")
        messages[key] = {"name": name, "summary": summary, "payload": schemas[(name, "push")]}
        channels[key] = {"address": name, "messages": {name: {"$ref": f"#/components/messages/{key}"}}}
        operations[key] = {"action": "send", "summary": summary, "channel": {"$ref": f"#/channels/{key}"},
                           "messages": [{"$ref": f"#/channels/{key}/messages/{name}"}]}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "live-commerce Socket.IO", "version": _version(),
                 "description": "Socket.IO on /socket.io/ with auth {\"token\"}. 'receive' operations are "
                                "events a client emits (with an ack); 'send' operations are pushes."},
        "defaultContentType": JSON,
        "channels": channels,
        "operations": operations,
        "components": {"schemas": dict(sorted(components.items())), "messages": messages},
    }


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_KEY])


async def asyncapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[ASYNCAPI_KEY])


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>live-commerce API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/api/docs.css"></head>
<body><main id="api"><h1>live-commerce API</h1><p>Loading <a href="/api/openapi.json">openapi.json</a>…</p></main>
<script type="module" src="/api/docs.js"></script></body></html>
"""


DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def setup(app: web.Application, socket_app: SocketApp) -> None:
    """Serve the documents; they are built once, on start-up, when every route is registered."""
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/api/asyncapi.json", asyncapi_json)

    async def docs(request: web.Request) -> web.Response:
        # Its own script and style, and fetches of the two documents; nothing else.
        return web.Response(text=DOCS_HTML, content_type="text/html", headers={"Content-Security-Policy": DOCS_CSP})

    app.router.add_get("/api/docs", docs)
    for name, ctype in (("docs.js", "text/javascript"), ("docs.css", "text/css")):
        data = (web_dir() / "apidocs" / name).read_bytes()

        async def asset(request: web.Request, data: bytes = data, ctype: str = ctype) -> web.Response:
            return web.Response(body=data, content_type=ctype)

        app.router.add_get(f"/api/{name}", asset)

    # Filled on start-up (the router is complete then); the dicts exist before the app freezes.
    app[OPENAPI_KEY] = {}
    app[ASYNCAPI_KEY] = {}

    async def on_startup(app: web.Application) -> None:
        app[OPENAPI_KEY].update(build_openapi(app))
        app[ASYNCAPI_KEY].update(build_asyncapi(socket_app))

    app.on_startup.append(on_startup)
