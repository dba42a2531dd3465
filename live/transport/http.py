"""HTTP plumbing shared by the route modules: errors, JSON bodies, the caller's identity."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError

from live.app.appkeys import SERVICES
from live.app.services import Services
from live.core.auth import Principal
from live.core.errors import Invalid, LiveError, Unauthorized

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


def principal(request: web.Request) -> Principal:
    """The authenticated caller, or ``Unauthorized``."""
    return services(request).auth.verify(bearer(request))


async def read_json(request: web.Request) -> Any:
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
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise Invalid(validation_message(e)) from e


def decimal_amount(v: Any) -> Decimal:
    """A money amount as the contract writes it (decimal string or number, > 0, at most 2
    decimals); ``ValueError`` otherwise (for pydantic validators)."""
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise ValueError("a decimal string or a number")
    try:
        d = Decimal(str(v).strip())
    except InvalidOperation as e:
        raise ValueError("not a number") from e
    if not d.is_finite() or d <= 0:
        raise ValueError("must be more than 0")
    if d.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("at most 2 decimals")
    return d


async def body(request: web.Request, model: type[M]) -> M:
    return parse(model, await read_json(request))


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error leaves as the contract's JSON error; nothing else escapes."""
    svc = request.app[SERVICES].get()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
    t0 = time.perf_counter()
    try:
        resp = await handler(request)
    except LiveError as e:
        svc.metrics.errors.labels("http", e.code).inc()
        resp = error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT",
                413: "INVALID", 429: "RATE_LIMITED", 503: "UNAVAILABLE"}.get(e.status, "INVALID")
        svc.metrics.errors.labels("http", code).inc()
        resp = json_response({"error": {"code": code, "message": e.reason}}, status=e.status)
    except (RedisConnectionError, RedisTimeoutError, OperationalError, TimeoutError) as e:
        log.warning("%s %s: backend unavailable: %s", request.method, request.path, e)
        svc.metrics.errors.labels("http", "UNAVAILABLE").inc()
        resp = json_response({"error": {"code": "UNAVAILABLE", "message": "a backend is unavailable; retry"}},
                             status=503)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        svc.metrics.errors.labels("http", "INTERNAL").inc()
        resp = json_response({"error": {"code": "INTERNAL", "message": "internal error"}}, status=500)
    svc.metrics.latency.labels(f"http {route}").observe(time.perf_counter() - t0)
    svc.metrics.http_requests.labels(route, str(resp.status)).inc()
    return resp


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
