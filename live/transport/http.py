"""HTTP plumbing shared by the route modules: errors, JSON bodies, the caller's identity,
and the edge checks every request passes (text SQL can store, body deadlines, security headers).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from live.app.appkeys import SERVICES
from live.app.services import Services
from live.core.auth import Principal
from live.core.errors import UNAVAILABLE_MESSAGE, Invalid, LiveError, Unauthorized, backend_unavailable

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers=headers)


def error_response(err: LiveError) -> web.Response:
    return json_response({"error": err.to_dict()}, status=err.status)


def validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def services(request: web.Request) -> Services:
    return request.app[SERVICES].get()


def bearer(request: web.Request) -> str | None:
    h = request.headers.get("Authorization", "")
    if h[:7].lower() == "bearer ":
        return h[7:].strip()
    return None


# The caller with the current role (see auth_middleware), or the Unauthorized to raise.
PRINCIPAL: web.RequestKey[Principal | LiveError] = web.RequestKey("principal")


def principal(request: web.Request) -> Principal:
    """The authenticated caller with the user's *current* role (not the token's), or
    ``Unauthorized`` (no token, a bad one, or a user that no longer exists)."""
    found = request.get(PRINCIPAL)
    if isinstance(found, Principal):
        return found
    if isinstance(found, LiveError):
        raise found
    return services(request).auth.verify(bearer(request))


# Characters no column can store: NUL (PostgreSQL's text refuses it) and lone surrogates
# (not encodable as UTF-8). Refused at the edge, so a request never gets as far as SQL with them.
UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


_SCALARS = (int, float, bool, type(None))


def check_storable(value: Any, where: str = "body") -> None:
    """``Invalid`` if any string in ``value`` (nested lists and objects, keys too) is unstorable."""
    if type(value) is dict:  # the usual payload, one flat object: one look at each string
        search = UNSTORABLE.search
        for k, v in value.items():
            if type(k) is not str or search(k) or not (type(v) in _SCALARS or (type(v) is str and not search(v))):
                break  # something to look into: the full walk below names where
        else:
            return
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            if UNSTORABLE.search(v):
                raise Invalid(f"{path}: contains a NUL or an unpaired surrogate character")
        elif isinstance(v, dict):
            for k, item in v.items():
                stack.append((path, k))
                stack.append((f"{path}.{k}" if isinstance(k, str) and len(k) < 40 else path, item))
        elif isinstance(v, list | tuple):
            stack.extend((path, item) for item in v)


@contextlib.asynccontextmanager
async def body_deadline(request: web.Request) -> AsyncIterator[None]:
    """Reading a request body must finish within ``http_body_timeout_s`` (a client trickling its
    body holds a connection and a buffer): past it, ``Invalid``."""
    svc = services(request)
    try:
        async with asyncio.timeout(svc.settings.http_body_timeout_s):
            yield
    except TimeoutError:
        svc.metrics.limited.labels("http_body_timeout").inc()
        raise Invalid("the request body did not arrive in time", limit="http_body_timeout") from None


async def read_json(request: web.Request) -> Any:
    async with body_deadline(request):
        raw = await request.read()
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise Invalid(f"body is not valid JSON: {e}") from e


def parse(model: type[M], data: Any) -> M:
    """Validate a payload against a model, or raise ``Invalid`` naming what is wrong."""
    if not isinstance(data, dict):
        raise Invalid("expected a JSON object")
    check_storable(data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise Invalid(validation_message(e)) from e


MONEY_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")


def decimal_amount(v: Any) -> Decimal:
    """A money amount as the contract writes it (decimal string or number, > 0, at most 2
    decimals); ``ValueError`` otherwise (for pydantic validators)."""
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise ValueError("a decimal string or a number")
    text = str(v).strip()
    # ASCII digits only: Decimal() also takes "١٢" (Arabic-Indic digits), "1_000" and "1e3".
    if not MONEY_RE.fullmatch(text):
        raise ValueError("digits 0-9 with at most 2 decimals, e.g. 19.90")
    try:
        d = Decimal(text)
    except InvalidOperation as e:
        raise ValueError("not a number") from e
    if not d.is_finite() or d <= 0:
        raise ValueError("must be more than 0")
    if d.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("at most 2 decimals")
    return d


async def body(request: web.Request, model: type[M]) -> M:
    return parse(model, await read_json(request))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def client_gone(request: web.Request) -> bool:
    """The client hung up (its connection is closing): nothing to answer, and not our error."""
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as the contract's JSON error; nothing else escapes."""
    svc = request.app[SERVICES].get()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
    t0 = time.perf_counter()
    try:
        check_storable(dict(request.match_info), "path")
        check_storable(list(request.query.items()), "query")
        resp = await handler(request)
    except LiveError as e:
        svc.metrics.errors.labels("http", e.code).inc()
        limit = e.extra.get("limit")
        if isinstance(limit, str) and limit != "http_body_timeout":  # that one counts itself
            svc.metrics.limited.labels(limit).inc()
        resp = error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT",
                413: "INVALID", 429: "RATE_LIMITED", 503: "UNAVAILABLE"}.get(e.status, "INVALID")
        svc.metrics.errors.labels("http", code).inc()
        resp = json_response({"error": {"code": code, "message": e.reason}}, status=e.status)
    except Exception as e:
        if client_gone(request):  # a disconnect, not a server error: one debug line, no count
            log.debug("%s %s: client went away (%s)", request.method, request.path, type(e).__name__)
            raise
        if backend_unavailable(e):
            log.warning("%s %s: backend unavailable: %s", request.method, request.path, e)
            svc.metrics.errors.labels("http", "UNAVAILABLE").inc()
            resp = json_response({"error": {"code": "UNAVAILABLE", "message": UNAVAILABLE_MESSAGE}}, status=503)
        else:
            log.exception("%s %s failed", request.method, request.path)
            svc.metrics.errors.labels("http", "INTERNAL").inc()
            resp = json_response({"error": {"code": "INTERNAL", "message": "internal error"}}, status=500)
    svc.metrics.latency.labels(f"http {route}").observe(time.perf_counter() - t0)
    svc.metrics.http_requests.labels(route, str(resp.status)).inc()
    return resp


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve a Bearer token once per request to the caller with the user's current role, so
    every route's ``principal(request)`` sees a demotion or a deletion within seconds, whatever
    the token says (``live.core.auth.AuthService.current``)."""
    token = bearer(request)
    if token:
        auth = services(request).auth
        try:
            request[PRINCIPAL] = await auth.current(auth.verify(token))
        except Unauthorized as e:
            request[PRINCIPAL] = e  # raised by principal() if the route wants a caller
    return await handler(request)


# --- security headers ----------------------------------------------------------------------
_IMPORTMAP = re.compile(rb'<script type="importmap">(.*?)</script>', re.S)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Pages: their own scripts, styles and images; live video from blob: (MediaSource, hls.js);
# images from blob:/data: (photo previews); Socket.IO and fetch to this origin only. The one
# inline script, the import map, is allowed by its hash.
PAGE_CSP = ("default-src 'self'; script-src 'self' {hashes}; style-src 'self'; img-src 'self' blob: data:; "
            "media-src 'self' blob:; connect-src 'self'; worker-src 'self' blob:; font-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
@functools.lru_cache(maxsize=64)
def page_csp(body: bytes) -> str:
    """The CSP of one HTML page: its inline import map allowed by hash (pages are built once at
    start-up, so this runs once per page)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in _IMPORTMAP.finditer(body))
    return PAGE_CSP.format(hashes=hashes)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CSP (with frame-ancestors), nosniff, referrer and permissions policy on every page and
    API answer. Pages are the routes named ``page:*`` (live.transport.pages); a page's 304
    carries no CSP, so the browser keeps the one its cached 200 had (RFC 9111 §4.3.4)."""
    resp = await handler(request)
    if resp.prepared:  # a websocket or a stream: its headers are already sent
        return resp
    headers = resp.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    # The camera and microphone are for the studio only; nothing else is asked for.
    headers.setdefault("Permissions-Policy", "camera=(self), microphone=(self), geolocation=()")
    if "Content-Security-Policy" in headers:
        return resp
    route = request.match_info.route.name or ""
    if route.startswith("page:"):
        body = getattr(resp, "body", None)
        if isinstance(body, bytes) and body:
            headers["Content-Security-Policy"] = page_csp(body)
    else:
        headers["Content-Security-Policy"] = API_CSP
    return resp


MIDDLEWARES = [security_headers, error_middleware, auth_middleware]


# --- the declarative layer the OpenAPI document is generated from (live.transport.openapi) ---
Auth = Literal["none", "bearer", "optional"]
H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class ApiSpec:
    """What one HTTP operation accepts and answers, read by ``live.transport.openapi``.

    ``request`` and ``query`` are the very models the handler validates with (``body`` /
    ``query``), so the published schema cannot drift from the check. ``responses`` maps a
    success status to a type pydantic can describe (a model, a TypedDict, ``list[...]``) or to
    ``None`` (no JSON body); ``media`` names a non-JSON response type (image, SDP, text)."""

    summary: str
    tag: str
    auth: Auth = "bearer"
    request: Any = None  # a model, or a union of models when a path parameter picks the body
    form: bool = False  # the request body may also be multipart/form-data (card creation)
    query: type[BaseModel] | None = None
    responses: dict[int, Any] = field(default_factory=dict)
    media: str | None = None
    request_media: str | None = None  # a non-JSON request body (an SDP offer)


API_ATTR = "__live_api__"


def api(summary: str, *, tag: str, auth: Auth = "bearer", request: Any = None,
        form: bool = False, query: type[BaseModel] | None = None, responses: dict[int, Any] | None = None,
        media: str | None = None, request_media: str | None = None) -> Callable[[H], H]:
    """Describe a route handler for the OpenAPI document (put it under ``@routes.get``...)."""
    spec = ApiSpec(summary, tag, auth, request, form, query, dict(responses or {200: None}), media, request_media)

    def deco(fn: H) -> H:
        setattr(fn, API_ATTR, spec)
        return fn

    return deco


def spec_of(handler: Any) -> ApiSpec | None:
    spec = getattr(handler, API_ATTR, None)
    return spec if isinstance(spec, ApiSpec) else None


def query(request: web.Request, model: type[M]) -> M:
    """Validate the query string against a model (values arrive as text: fields are lax)."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as e:
        raise Invalid(validation_message(e)) from e


def require(cond: bool, message: str) -> None:
    if not cond:
        raise Invalid(message)


__all__ = ["ApiSpec", "Principal", "Unauthorized", "api", "body", "json_response", "parse", "principal", "query",
           "read_json", "services", "spec_of"]
