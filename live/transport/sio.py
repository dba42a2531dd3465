"""Socket.IO transport: the server, connect-time auth, and a decorator that turns a handler's
result or domain error into the contract's ack.

Domain-specific events live in their own modules (``sio_rooms``, ``sio_flash``, ``sio_chat``)
and register through :func:`SocketApp.event`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
import socketio
from pydantic import BaseModel, ValidationError

from live.app.appkeys import ServicesRef
from live.core import keys
from live.core.auth import Principal
from live.core.errors import (
    UNAVAILABLE_MESSAGE,
    Invalid,
    LiveError,
    RateLimited,
    Unauthorized,
    Unavailable,
    backend_unavailable,
)
from live.core.metrics import CounterChild, HistogramChild
from live.core.push import room_channel, user_channel
from live.core.settings import Settings
from live.transport.fanout import FanoutManager, FanoutRedisManager, FastPathCollector, LiveSocketServer
from live.transport.http import check_storable, validation_message

if TYPE_CHECKING:
    from live.app.services import Services

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class OrjsonShim:
    """python-socketio's JSON hook wants ``dumps`` to return ``str``."""

    @staticmethod
    def dumps(obj: object, *args: object, **kwargs: object) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(s: str | bytes, *args: object, **kwargs: object) -> object:
        return orjson.loads(s)


def make_server(settings: Settings, redis_url: str | None) -> LiveSocketServer:
    """The Socket.IO server; with ``redis_url`` its emits reach clients on every process."""
    manager: socketio.AsyncManager = FanoutManager()
    if redis_url:
        manager = FanoutRedisManager(redis_url, channel=f"{keys.PREFIX}:socketio")
    origins: list[str] | None = [o.strip() for o in settings.cors_origins.split(",") if o.strip()] or None
    server = LiveSocketServer(
        async_mode="aiohttp",
        client_manager=manager,
        json=OrjsonShim,
        cors_allowed_origins=origins,
        # Engine.IO already runs each incoming message in its own task; a second task per event
        # (python-socketio's default) costs CPU on the buy path and loses per-client ordering.
        async_handlers=False,
        ping_interval=settings.socket_ping_interval_s,
        ping_timeout=settings.socket_ping_timeout_s,
        max_http_buffer_size=64 * 1024,
        logger=False,
        engineio_logger=False,
        send_budget_bytes=settings.socket_send_budget_bytes,
        send_budget_messages=settings.socket_send_budget_messages,
        max_unauthenticated=settings.socket_max_unauthenticated,
        handshake_timeout_s=settings.socket_handshake_timeout_s,
        inflight_per_socket=settings.socket_inflight_per_connection,
    )
    return server


Handler = Callable[[str, Principal, Any], Awaitable[dict[str, Any] | None]]
# An event served without a task: (sid, principal, payload, reply); reply(result or error).
NowHandler = Callable[[str, Principal, Any, Callable[[dict[str, Any] | BaseException], None]], None]


class SocketApp:
    """Connections, their principals, and event registration with uniform acks."""

    def __init__(self, sio: LiveSocketServer, ref: ServicesRef) -> None:
        self.sio = sio
        self._ref = ref
        self.users: dict[str, Principal] = {}
        self.per_user: Counter[str] = Counter()  # user id -> sockets on this process
        self.on_disconnect: list[Callable[[str, Principal], Awaitable[None]]] = []
        # Registered events: name → (payload model, summary), for the AsyncAPI document.
        self.events: dict[str, tuple[type[BaseModel] | None, str]] = {}
        sio.on("connect", self._connect)
        sio.on("disconnect", self._disconnect)
        # Hooks run once the services exist (bus subscriptions and the like).
        self.on_start: list[Callable[[Services], Awaitable[None] | None]] = [self._start]

    def _start(self, svc: Services) -> None:
        """Once per running app: metrics of the fast path and the limits, role-change notices."""
        self.sio.log_fast_path()
        svc.metrics.registry.register(FastPathCollector(self.sio))
        auth = svc.auth
        svc.metrics.password_hash_busy.set_function(lambda: auth.hash_pool.busy)

        async def publish_role(user_id: str) -> None:
            await svc.bus.publish(keys.CH_ROLE, user_id)

        async def on_role(user_id: str) -> None:
            auth.forget_role(user_id if isinstance(user_id, str) else user_id.decode())

        auth.on_role_change = publish_role
        svc.bus.subscribe(keys.CH_ROLE, on_role)

        async def close() -> None:
            auth.hash_pool.close()
            await self.sio.cancel_background()
            for timer in self.sio.pending.values():
                timer.cancel()
            self.sio.pending.clear()

        svc.closers.append(close)

    @property
    def svc(self) -> Services:
        """The running app's services (see ``live.app.appkeys.ServicesRef``)."""
        return self._ref.get()

    async def _connect(self, sid: str, environ: dict[str, object], auth: object = None) -> None:
        token = cast(dict[str, object], auth).get("token") if isinstance(auth, dict) else None
        # verify() refuses a token that is not a string (a client may send anything).
        svc = self.svc
        try:
            try:
                who = await svc.auth.current(svc.auth.verify(cast(str | None, token)))
            except Exception as e:
                if backend_unavailable(e):
                    raise Unavailable(UNAVAILABLE_MESSAGE) from e
                raise
            cap = svc.settings.socket_max_per_user
            if self.per_user[who.id] >= cap:
                svc.metrics.limited.labels("sockets_per_user").inc()
                raise RateLimited(f"at most {cap} connections per user", limit="sockets_per_user")
        except LiveError as e:
            # The client sees {"message": ..., "data": {"code": "UNAUTHORIZED", "message": ...}}.
            raise socketio.exceptions.ConnectionRefusedError(e.message, e.to_dict()) from None
        self.users[sid] = who
        self.per_user[who.id] += 1
        await self.sio.enter_room(sid, user_channel(who.id))
        svc.metrics.connections.inc()

    async def _disconnect(self, sid: str, *args: object) -> None:
        who = self.users.pop(sid, None)
        if who is not None:
            self.per_user[who.id] -= 1
            if self.per_user[who.id] <= 0:
                del self.per_user[who.id]
        if who is None or not self._ref.running:
            return  # unknown, or the app is shutting down (its services are already closed)
        self.svc.metrics.connections.dec()
        for hook in self.on_disconnect:
            try:
                await hook(sid, who)
            except Exception:
                log.exception("disconnect hook failed")

    def event(self, name: str, model: type[M] | None = None, concurrent: bool = False,
              now: NowHandler | None = None) -> Callable[[Handler], Handler]:
        """Register ``handler(sid, principal, payload) -> dict`` for event ``name``.

        The ack is ``{"ok": true, **result}`` or ``{"ok": false, "error": {...}}``; a bad
        payload is ``INVALID`` and never drops the connection. ``concurrent``: one connection's
        events of this kind may be served side by side (see ``LiveSocketServer.on_direct``).
        ``now``: the same event without a task of its own (a buy): ``now(sid, principal, payload,
        reply)`` calls ``reply`` with the result or the error, at once or later; it is used on a
        websocket's short path when the caller's role is known without a wait, ``handler``
        otherwise. Both get the same checks, errors and metrics.
        """
        def deco(fn: Handler) -> Handler:
            self.events[name] = (model, (fn.__doc__ or name).strip().splitlines()[0])
            # Metric children per event, looked up once per running app (labels() is not free).
            children: dict[int, tuple[CounterChild, HistogramChild]] = {}
            ref = self._ref
            clock = time.perf_counter

            def metrics_of(svc: Services) -> tuple[CounterChild, HistogramChild]:
                metrics = svc.metrics
                mine = children.get(id(metrics))
                if mine is None:
                    children.clear()
                    mine = children[id(metrics)] = (metrics.events.labels(name),
                                                    metrics.latency.labels(f"sio {name}"))
                return mine

            async def wrapped(sid: str, *args: object) -> dict[str, Any]:
                t0 = clock()
                svc = ref.get()
                mine = metrics_of(svc)
                mine[0].inc()
                try:
                    token_who = self.users.get(sid)
                    if token_who is None:
                        raise Unauthorized("not connected")
                    # The current role, not the one the token was signed with.
                    who = await svc.auth.current(token_who)
                    result = await fn(sid, who, _payload(model, args))
                    return {"ok": True, **(result or {})}
                except Exception as e:
                    return _error_ack(name, svc, e)
                finally:
                    mine[1].observe(clock() - t0)

            def wrapped_now(sid: str, args: list[object], reply: Callable[[dict[str, Any]], None]) -> bool:
                """False (nothing done) when the caller's role must be loaded first: use ``wrapped``."""
                token_who = self.users.get(sid)
                if token_who is None or now is None:
                    return False
                svc = ref.get()
                try:
                    who = svc.auth.current_now(token_who)
                except LiveError:
                    return False  # the account is gone: wrapped says so, the same way
                if who is None:
                    return False
                t0 = clock()
                mine = metrics_of(svc)
                mine[0].inc()

                def done(outcome: dict[str, Any] | BaseException) -> None:
                    if isinstance(outcome, BaseException):
                        ack = _error_ack(name, svc, outcome)
                    else:
                        ack = {"ok": True, **outcome}
                    mine[1].observe(clock() - t0)
                    reply(ack)

                try:
                    now(sid, who, _payload(model, args), done)
                except Exception as e:
                    done(e)
                return True

            self.sio.on_direct(name, wrapped, concurrent=concurrent, now=wrapped_now if now else None)
            return fn

        return deco


def _payload(model: type[BaseModel] | None, args: tuple[object, ...] | list[object]) -> object:
    """An event's one payload, checked at the edge: storable text, and the model's shape."""
    if len(args) > 1:
        raise Invalid("expected one payload object")
    data = args[0] if args else None
    check_storable(data, "payload")
    if model is None:
        return data
    if not isinstance(data, dict):
        raise Invalid("expected a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise Invalid(validation_message(e)) from e


def _error_ack(name: str, svc: Services, e: BaseException) -> dict[str, Any]:
    """The ack for a handler's error: the contract's own, UNAVAILABLE for a backend that is
    down, INTERNAL (logged with its traceback) for anything else."""
    metrics = svc.metrics
    if isinstance(e, LiveError):
        metrics.errors.labels("socket", e.code).inc()
        limit = e.extra.get("limit")
        if isinstance(limit, str):
            metrics.limited.labels(limit).inc()
        return {"ok": False, "error": e.to_dict()}
    if isinstance(e, Exception) and backend_unavailable(e):
        log.warning("%s: backend unavailable: %s", name, e)
        metrics.errors.labels("socket", "UNAVAILABLE").inc()
        return {"ok": False, "error": {"code": "UNAVAILABLE", "message": UNAVAILABLE_MESSAGE}}
    log.error("%s failed", name, exc_info=e)
    metrics.errors.labels("socket", "INTERNAL").inc()
    return {"ok": False, "error": {"code": "INTERNAL", "message": "internal error"}}


class SioPusher:
    """Implements ``live.core.push.Pusher`` on Socket.IO (through its Redis manager when set)."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio
        self.kick_handler: Callable[[str, str], Awaitable[None]] | None = None

    async def to_room(self, room_id: str, event: str, data: Any) -> None:
        await self.sio.emit(event, data, room=room_channel(room_id))

    async def to_user(self, user_id: str, event: str, data: Any) -> None:
        await self.sio.emit(event, data, room=user_channel(user_id))

    async def kick(self, room_id: str, user_id: str) -> None:
        if self.kick_handler is not None:
            await self.kick_handler(room_id, user_id)
