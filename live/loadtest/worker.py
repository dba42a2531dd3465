"""The viewer side of a load test: many lean Socket.IO viewers in one event loop.

A worker runs in the driver's process (``--procs 1``) or in a process of its own. It creates
its guests, connects and joins them (ramped), plays its scenario, hands its raw samples to
the driver (``deliver``), then keeps the connections open until the driver says stop. The
driver watches progress through a few shared counters per worker (no locks: each worker
writes only its own slots) and merges the raw samples itself, so percentiles are exact.

Times are ``time.monotonic()``: CLOCK_MONOTONIC is system-wide on Linux, so samples taken in
different processes on one machine share a time base with the driver's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, MutableSequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from live.loadtest.api import Backend, HttpError
from live.loadtest.client import ConnectRefused, Disconnected, LeanSocket, event_data, make_session

# Progress counters, one block of NSLOTS per worker.
GUESTS, JOINED, FAILED, CARD_RX, ACKS, SENT, RX, DONE = range(8)
NSLOTS = 8

# Harmless chat lines: no digits runs, links or contact words a moderation guard would flag.
PHRASES = ["好看！", "这个颜色真不错", "主播辛苦了", "已经下单啦", "nice color", "想要同款", "哈哈哈", "支持支持",
           "what size is it", "质量怎么样", "来了来了", "good deal"]


class Flag(Protocol):
    """``threading.Event`` or ``multiprocessing.Event``: only polled, never blocked on."""

    def is_set(self) -> bool: ...


@dataclass
class ViewerPlan:
    """What one worker does (picklable: it crosses into worker processes)."""

    scenario: str  # "flash" | "chat" | "soak"
    url: str
    room_id: str
    first: int  # global index of this worker's first viewer
    count: int
    ramp: float = 0.0  # connections per second for this worker; 0 = as fast as concurrency allows
    concurrency: int = 100  # connects in flight
    timeout: float = 60.0  # for each connect, ack and for the card to arrive
    taps: int = 1
    messages: int = 5
    interval: float = 0.0
    observers: int = 50  # viewers with a global index below this record chat arrivals
    duration: float = 0.0
    rate: float = 0.0  # soak: operations per second for this worker, all viewers together
    seed: int = 0


@dataclass
class Control:
    """Driver ↔ worker: shared counters (this worker's block starts at ``base``) and three flags:
    ``connect`` (guests are made; connect now), ``go`` (start sending) and ``stop``."""

    counters: MutableSequence[int]
    base: int
    connect: Flag
    go: Flag
    stop: Flag


@dataclass
class Samples:
    """Raw results of one worker; merged by the driver."""

    requested: int = 0
    joined: int = 0
    connect_errors: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    card_rx: list[float] = field(default_factory=list)
    tap_sent: list[float] = field(default_factory=list)
    tap_ack: list[float] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    sold_acked: int = 0
    chat_sent: list[tuple[str, float]] = field(default_factory=list)  # (message id, sent at)
    chat_lat: list[float] = field(default_factory=list)
    chat_ack: list[float] = field(default_factory=list)
    chat_rx: list[tuple[str, float]] = field(default_factory=list)  # observers only
    chat_rx_total: int = 0
    ops: dict[str, list[float]] = field(default_factory=dict)  # soak: op → latencies (s)
    op_ack: list[float] = field(default_factory=list)
    cpu_guests_s: float = 0.0
    cpu_connect_s: float = 0.0
    cpu_run_s: float = 0.0
    frames_run: int = 0
    wall_connect_s: float = 0.0


class Viewer:
    """One connected viewer and what it saw."""

    __slots__ = ("card", "card_t", "idx", "observe", "rx", "samples", "sock", "token")

    def __init__(self, idx: int, token: str, session: aiohttp.ClientSession, url: str, samples: Samples,
                 observe: bool) -> None:
        self.idx = idx
        self.token = token
        self.samples = samples
        self.observe = observe
        self.card: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.card_t = 0.0
        self.rx = 0
        self.sock = LeanSocket(session, url, self.on_event)

    def on_event(self, name: str, raw: str, start: int, t: float) -> None:
        if name == "chat:message":
            self.rx += 1
            if self.observe:
                msg = event_data(raw, start)
                if isinstance(msg, dict):
                    self.samples.chat_rx.append((str(msg.get("id")), t))
        elif name == "flash:card" and not self.card.done():
            data = event_data(raw, start)
            if isinstance(data, dict) and data.get("id"):
                self.card_t = t
                self.card.set_result(data)


def raise_fd_limit() -> None:
    """Each viewer is a socket: lift the soft fd limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def ack_code(ack: Any) -> str:
    """The error code of an ack (``BAD_ACK`` when it carries none)."""
    if isinstance(ack, dict):
        err = ack.get("error")
        if isinstance(err, dict) and err.get("code"):
            return str(err["code"])
    return "BAD_ACK"


class Worker:
    """Runs one :class:`ViewerPlan`."""

    def __init__(self, plan: ViewerPlan, ctl: Control) -> None:
        self.plan = plan
        self.ctl = ctl
        self.samples = Samples(requested=plan.count)
        self.local = [0] * NSLOTS
        self.viewers: list[Viewer] = []
        self.rng = random.Random(plan.seed)
        self.session: aiohttp.ClientSession | None = None

    def bump(self, slot: int, n: int = 1) -> None:
        self.local[slot] += n

    async def _flush_loop(self) -> None:
        # Copy local counters into shared memory ten times a second rather than on every event.
        while True:
            self._flush()
            await asyncio.sleep(0.1)

    def _flush(self) -> None:
        rx = sum(v.rx for v in self.viewers)
        self.local[RX] = rx
        for i, v in enumerate(self.local):
            self.ctl.counters[self.ctl.base + i] = v

    async def _wait_flag(self, flag: Flag) -> None:
        # The flag may be a multiprocessing.Event set by another process: poll, never block the loop.
        while not flag.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def run(self, deliver: Callable[[Samples], None]) -> None:
        """Play the plan, ``deliver`` the samples, hold the connections until stop, close."""
        raise_fd_limit()
        flusher = asyncio.create_task(self._flush_loop())
        session = self.session = make_session()
        try:
            await self._play(session)
            self.samples.chat_rx_total = sum(v.rx for v in self.viewers)
            self._flush()
            deliver(self.samples)
            await self._wait_flag(self.ctl.stop)
        finally:
            await asyncio.gather(*(v.sock.close() for v in self.viewers), return_exceptions=True)
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            self._flush()
            await session.close()

    async def _play(self, session: aiohttp.ClientSession) -> None:
        p = self.plan
        s = self.samples
        backend = Backend(p.url, session)
        cpu = time.process_time()
        tokens = await self._guests(backend)
        s.cpu_guests_s = time.process_time() - cpu
        # Wait for the driver, so a benchmark can sample the server between making guests and connecting.
        await self._wait_flag(self.ctl.connect)

        cpu = time.process_time()
        wall = time.monotonic()
        await self._connect_all(session, tokens)
        s.cpu_connect_s = time.process_time() - cpu
        s.wall_connect_s = time.monotonic() - wall
        live = [v for v in self.viewers if v.sock.connected]
        s.joined = len(live)

        cpu = time.process_time()
        frames = sum(v.sock.sent + v.sock.received for v in live)
        if p.scenario == "flash":
            await asyncio.gather(*(self._flash(v) for v in live))
        elif p.scenario == "chat":
            await self._wait_flag(self.ctl.go)
            await asyncio.gather(*(self._chat(v) for v in live))
            await self._wait_flag(self.ctl.stop)  # keep counting arrivals until the driver has seen them drain
        elif p.scenario == "soak":
            await asyncio.gather(*(self._soak(v) for v in live))
        else:
            raise ValueError(f"unknown scenario {p.scenario!r}")
        s.cpu_run_s = time.process_time() - cpu
        s.frames_run = sum(v.sock.sent + v.sock.received for v in self.viewers) - frames

    async def _guests(self, backend: Backend) -> list[str | None]:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> str | None:
            async with sem:
                for attempt in range(3):
                    try:
                        token = await backend.guest(f"viewer{self.plan.first + i}")
                        self.bump(GUESTS)
                        return token
                    except HttpError as e:
                        if attempt == 2 or (e.status < 500 and e.status != 429):
                            self.samples.connect_errors[f"GUEST_{e.code}"] += 1
                            break
                    except (aiohttp.ClientError, TimeoutError):
                        if attempt == 2:
                            self.samples.connect_errors["GUEST_NETWORK"] += 1
                    await asyncio.sleep(0.2 * (attempt + 1))
                self.bump(FAILED)
                return None

        return list(await asyncio.gather(*(one(i) for i in range(self.plan.count))))

    async def _connect_all(self, session: aiohttp.ClientSession, tokens: list[str | None]) -> None:
        p = self.plan
        sem = asyncio.Semaphore(max(1, p.concurrency))
        start = time.monotonic()
        for i, tok in enumerate(tokens):
            if tok is not None:
                g = p.first + i
                self.viewers.append(Viewer(g, tok, session, p.url, self.samples, g < p.observers))

        async def one(k: int, v: Viewer) -> None:
            if p.ramp > 0:
                await asyncio.sleep(max(0.0, start + k / p.ramp - time.monotonic()))
            async with sem:
                try:
                    await v.sock.connect({"token": v.token}, timeout=p.timeout)
                    ack = await v.sock.call("room:join", {"room_id": p.room_id}, timeout=p.timeout)
                except ConnectRefused as e:
                    self.samples.connect_errors[e.code] += 1
                except (TimeoutError, Disconnected, aiohttp.ClientError, ConnectionError, OSError) as e:
                    self.samples.connect_errors[f"CONNECT_{type(e).__name__}"] += 1
                else:
                    if isinstance(ack, dict) and ack.get("ok"):
                        self.bump(JOINED)
                        return
                    self.samples.connect_errors[f"JOIN_{ack_code(ack)}"] += 1
                self.bump(FAILED)
                await v.sock.close()

        await asyncio.gather(*(one(k, v) for k, v in enumerate(self.viewers)))

    async def _wait_card(self, v: Viewer) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(self.plan.timeout):
                card = await v.card
        except TimeoutError:
            self.samples.errors["NO_CARD"] += 1
            return None
        self.samples.card_rx.append(v.card_t)
        self.bump(CARD_RX)
        return card

    async def _flash(self, v: Viewer) -> None:
        card = await self._wait_card(v)
        if card is None:
            return
        for _ in range(self.plan.taps):
            await self._buy(v, str(card["id"]))
        self.bump(DONE)

    async def _call(self, v: Viewer, event: str, data: dict[str, Any],
                    op_lat: list[float] | None) -> tuple[Any, float, float] | bool:
        """Emit with an ack and time it: ``(ack, sent, acked)``, or True (timed out, go on) /
        False (the connection is gone) after counting the error."""
        s = self.samples
        t0 = time.monotonic()
        self.bump(SENT)
        try:
            ack = await v.sock.call(event, data, timeout=self.plan.timeout)
        except TimeoutError:
            s.errors["TIMEOUT"] += 1
            return True
        except Disconnected:
            s.errors["DISCONNECTED"] += 1
            return False
        t1 = time.monotonic()
        if op_lat is not None:
            op_lat.append(t1 - t0)
            s.op_ack.append(t1)
        self.bump(ACKS)
        return ack, t0, t1

    async def _buy(self, v: Viewer, card_id: str, op_lat: list[float] | None = None) -> bool:
        """One tap; False when the connection is gone."""
        s = self.samples
        got = await self._call(v, "flash:buy", {"card_id": card_id, "qty": 1, "request_id": uuid.uuid4().hex},
                               op_lat)
        if isinstance(got, bool):
            return got
        ack, t0, t1 = got
        s.tap_sent.append(t0)
        s.tap_ack.append(t1)
        if isinstance(ack, dict) and ack.get("ok"):
            order = ack.get("order") or {}
            s.order_ids.append(str(order.get("id")))
            s.sold_acked += int(order.get("qty", 1))
        else:
            s.errors[ack_code(ack)] += 1
        return True

    async def _chat_once(self, v: Viewer, text: str, op_lat: list[float] | None = None) -> bool:
        s = self.samples
        got = await self._call(v, "chat:send", {"room_id": self.plan.room_id, "text": text}, op_lat)
        if isinstance(got, bool):
            return got
        ack, t0, t1 = got
        s.chat_lat.append(t1 - t0)
        s.chat_ack.append(t1)
        if isinstance(ack, dict) and ack.get("ok"):
            msg = ack.get("message") or {}
            s.chat_sent.append((str(msg.get("id")), t0))
        else:
            s.errors[ack_code(ack)] += 1
        return True

    async def _chat(self, v: Viewer) -> None:
        p = self.plan
        for m in range(p.messages):
            if not await self._chat_once(v, PHRASES[(v.idx + m) % len(PHRASES)]):
                break
            if p.interval > 0:
                await asyncio.sleep(p.interval)
        self.bump(DONE)

    async def _soak(self, v: Viewer) -> None:
        """Steady mixed traffic: chat, buy taps, leave/re-join, and now and then a reconnect."""
        p = self.plan
        s = self.samples
        card = await self._wait_card(v)
        await self._wait_flag(self.ctl.go)
        per_viewer = p.rate / max(1, len(self.viewers))
        deadline = time.monotonic() + p.duration
        for name in ("buy", "chat", "rejoin", "reconnect"):
            s.ops.setdefault(name, [])
        while not self.ctl.stop.is_set():
            pause = self.rng.expovariate(per_viewer) if per_viewer > 0 else 1.0
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                break
            r = self.rng.random()
            if r < 0.4 and card is not None:
                alive = await self._buy(v, str(card["id"]), s.ops["buy"])
            elif r < 0.8:
                alive = await self._chat_once(v, PHRASES[self.rng.randrange(len(PHRASES))], s.ops["chat"])
            elif r < 0.98:
                alive = await self._rejoin(v, s.ops["rejoin"])
            else:
                alive = await self._reconnect(v, s.ops["reconnect"])
            if not alive:
                s.errors["DISCONNECTED_VIEWER"] += 1
                break
        self.bump(DONE)

    def _joined(self, ack: Any, t0: float, lat: list[float]) -> None:
        """Time a soak operation that ends with a room:join ack, and count a refused join."""
        t1 = time.monotonic()
        lat.append(t1 - t0)
        self.samples.op_ack.append(t1)
        self.bump(ACKS)
        if not (isinstance(ack, dict) and ack.get("ok")):
            self.samples.errors[f"JOIN_{ack_code(ack)}"] += 1

    async def _rejoin(self, v: Viewer, lat: list[float]) -> bool:
        t0 = time.monotonic()
        try:
            await v.sock.call("room:leave", {"room_id": self.plan.room_id}, timeout=self.plan.timeout)
            ack = await v.sock.call("room:join", {"room_id": self.plan.room_id}, timeout=self.plan.timeout)
        except TimeoutError:
            self.samples.errors["TIMEOUT"] += 1
            return True
        except Disconnected:
            return False
        self._joined(ack, t0, lat)
        return True

    async def _reconnect(self, v: Viewer, lat: list[float]) -> bool:
        t0 = time.monotonic()
        await v.sock.close()
        assert self.session is not None
        v.sock = LeanSocket(self.session, self.plan.url, v.on_event)
        try:
            await v.sock.connect({"token": v.token}, timeout=self.plan.timeout)
            ack = await v.sock.call("room:join", {"room_id": self.plan.room_id}, timeout=self.plan.timeout)
        except ConnectRefused as e:
            self.samples.errors[e.code] += 1
            return False
        except (TimeoutError, Disconnected, aiohttp.ClientError, ConnectionError, OSError) as e:
            self.samples.errors[f"RECONNECT_{type(e).__name__}"] += 1
            return False
        self._joined(ack, t0, lat)
        return True


def _runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop when it is there, as in the server and bench.inflight's load processes. Waiting for
    and reading a card sent to 5,000 viewers, a viewer process spent 65–70 µs of CPU per frame on
    the standard loop and 24–30 µs on uvloop: on a small box that CPU is taken from the server
    being measured, and the last viewer waits for it."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run
    return uvloop.run


def process_main(plan: ViewerPlan, counters: Any, base: int, connect: Any, go: Any, stop: Any, out: Any) -> None:
    """Entry point of a worker process: run the plan, put its samples (or an error) on ``out``."""
    try:
        ctl = Control(counters, base, connect, go, stop)
        _runner()(Worker(plan, ctl).run(lambda s: out.put(("ok", base, s))))
    except BaseException as e:  # report, never hang the driver
        out.put(("error", base, f"{type(e).__name__}: {e}"))
        raise
