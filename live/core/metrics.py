"""Prometheus metrics, in a registry owned by the app (no module-level singletons)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "CounterChild", "HistogramChild", "LoopCounter", "LoopHistogram", "Metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


# --- metrics counted on the hot path ----------------------------------------------------------
# prometheus_client's Counter and Histogram take a threading lock per update, and a histogram
# observation walks its buckets in Python: on the buy path (three updates per tap) that was ~5 %
# of the serving process's CPU. These are updated only from the event loop's thread (every
# handler runs there), so a plain ``+=`` cannot race; the exposition is prometheus_client's own.
class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # a bucket's bound is inclusive (le)
        self.total += amount


class _Labelled(Collector):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def _child(self, values: tuple[object, ...]) -> Any:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key}")
            child = self._children[key] = self._new()
        return child

    def _new(self) -> Any:
        raise NotImplementedError


class LoopCounter(_Labelled):
    """A labelled counter for the event loop's thread (see above): ``labels(...).inc()``."""

    def labels(self, *values: object) -> CounterChild:
        return self._child(values)

    def _new(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(self.name.removesuffix("_total"), self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            family.add_metric(list(key), child.value)
        yield family


class LoopHistogram(_Labelled):
    """A labelled histogram for the event loop's thread: ``labels(...).observe(seconds)``."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry,
                 buckets: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: object) -> HistogramChild:
        return self._child(values)

    def _new(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            running, buckets = 0, []
            for bound, n in zip((*self.bounds, float("inf")), child.counts, strict=True):
                running += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric(list(key), buckets, child.total)
        yield family


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("live_socket_connections", "Open Socket.IO connections", registry=r)
        self.rooms = Gauge("live_rooms_with_viewers", "Rooms with viewers on this process", registry=r)
        self.events = LoopCounter("live_socket_events_total", "Socket.IO events handled", ["event"], r)
        self.errors = LoopCounter("live_errors_total", "Errors returned to clients", ["where", "code"], r)
        self.latency = LoopHistogram("live_handler_seconds", "Handler latency", ["handler"], r, LATENCY_BUCKETS)
        self.http_requests = Counter("live_http_requests_total", "HTTP requests", ["route", "status"], registry=r)
        # flash-buy
        self.buys = LoopCounter("live_buys_total", "Buy attempts by outcome", ["outcome"], r)
        self.orders_persisted = Counter("live_orders_persisted_total", "Order events written to SQL",
                                        registry=r)
        self.dead_letters = Counter("live_dead_letters_total", "Stream events given up after N deliveries",
                                    ["stream"], registry=r)
        self.orders_expired = Counter("live_orders_expired_total", "Orders expired unpaid", registry=r)
        self.reconcile_mismatches = Gauge("live_reconcile_mismatches", "Cards failing the stock invariant "
                                          "at the last reconciliation", registry=r)
        self.stream_backlog = Gauge("live_stream_backlog", "Order events waiting for SQL", registry=r)
        self.rebuilds = Counter("live_card_rebuilds_total", "Cards rebuilt from SQL (missing in Redis, "
                                "behind SQL, or fenced)", registry=r)
        # chat & trust and safety
        self.chat_messages = Counter("live_chat_messages_total", "Chat messages accepted", registry=r)
        self.blocked = Counter("live_blocked_total", "Content refused by the guard", ["kind", "reason"],
                               registry=r)
        # media
        self.publishers = Gauge("live_media_publishers", "WHIP publishers on this process", registry=r)
        self.whep_viewers = Gauge("live_media_whep_viewers", "WHEP viewers on this process", registry=r)
        # --- bounds and edge limits ---
        self.limited = Counter("live_limits_refused_total", "Requests and connections refused by a resource "
                               "limit (rate, pool, cap, timeout)", ["limit"], registry=r)
        self.password_hash_busy = Gauge("live_password_hash_busy", "Argon2 hashes running or queued", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
