"""One tree of domain errors, each with a stable contract code and an HTTP status.

Domain modules raise these; ``live.transport.http`` and ``live.transport.sio`` are the only
places that turn them into HTTP JSON errors and Socket.IO acks.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


class LiveError(Exception):
    """Base of every error a client may see."""

    code = "INVALID"
    status = 400

    def __init__(self, message: str = "", **extra: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code.replace("_", " ").lower()
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        """The contract's error object: ``{"code","message", ...extra}``."""
        return {"code": self.code, "message": self.message, **self.extra}


class Invalid(LiveError):
    code, status = "INVALID", 400


class Unauthorized(LiveError):
    code, status = "UNAUTHORIZED", 401


class Forbidden(LiveError):
    code, status = "FORBIDDEN", 403


class NotFound(LiveError):
    code, status = "NOT_FOUND", 404


class Conflict(LiveError):
    code, status = "CONFLICT", 409


class RateLimited(LiveError):
    code, status = "RATE_LIMITED", 429


class SoldOut(LiveError):
    code, status = "SOLD_OUT", 409


class LimitExceeded(LiveError):
    code, status = "LIMIT_EXCEEDED", 409


class NotOnSale(LiveError):
    code, status = "NOT_ON_SALE", 409


class Blocked(LiveError):
    """Content refused by moderation; ``reason`` says why (e.g. ``private_trading``)."""

    code, status = "BLOCKED", 422

    def __init__(self, message: str = "", *, reason: str, **extra: Any) -> None:
        super().__init__(message or f"blocked: {reason}", reason=reason, **extra)
        self.reason = reason


class Muted(LiveError):
    code, status = "MUTED", 403


class Unavailable(LiveError):
    code, status = "UNAVAILABLE", 503


class NotEligible(LiveError):
    """The caller is outside a sale's or a lucky bag's audience (e.g. followers only)."""

    code, status = "NOT_ELIGIBLE", 403


BY_CODE: dict[str, type[LiveError]] = {
    cls.code: cls
    for cls in (Invalid, Unauthorized, Forbidden, NotFound, Conflict, RateLimited, SoldOut,
                LimitExceeded, NotOnSale, Muted, Unavailable, NotEligible)
}


# --- "a backend is unavailable": one definition for HTTP and Socket.IO alike ---------------
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, OperationalError, InterfaceError, DisconnectionError,
    PoolTimeoutError, TimeoutError, ConnectionError,
    # A Redis Cluster restarting or failing over: CLUSTERDOWN / MASTERDOWN / TRYAGAIN, a slot no node serves.
    ClusterDownError, TryAgainError, SlotNotCoveredError)


def backend_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means Redis or the database did not answer (down, restarting, too slow,
    pool exhausted): the caller answers ``UNAVAILABLE`` (retry), never ``INTERNAL``."""
    if isinstance(exc, BACKEND_ERRORS):
        return True
    if isinstance(exc, RedisClusterException) and exc.__cause__ is not None:
        # redis-py's "Redis Cluster cannot be connected" is raised *from* the connection error;
        # other RedisClusterExceptions (a cross-slot command) are bugs and stay INTERNAL.
        return backend_unavailable(exc.__cause__)
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


UNAVAILABLE_MESSAGE = "a backend is unavailable; retry"


def log_loop_error(logger: logging.Logger, message: str, exc: BaseException) -> None:
    """A background loop's round failed. A backend that is away (Redis or SQL down or slow) is one
    warning line, the next round retries; anything else keeps its traceback."""
    if backend_unavailable(exc):
        logger.warning("%s: backend unavailable (%s); retrying", message, type(exc).__name__)
    else:
        logger.error(message, exc_info=exc)
