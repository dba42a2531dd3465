"""Prometheus metrics, in a registry owned by the app (no module-level singletons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("live_socket_connections", "Open Socket.IO connections", registry=r)
        self.rooms = Gauge("live_rooms_with_viewers", "Rooms with viewers on this process", registry=r)
        self.events = Counter("live_socket_events_total", "Socket.IO events handled", ["event"], registry=r)
        self.errors = Counter("live_errors_total", "Errors returned to clients", ["where", "code"], registry=r)
        self.latency = Histogram("live_handler_seconds", "Handler latency", ["handler"], registry=r,
                                 buckets=LATENCY_BUCKETS)
        self.http_requests = Counter("live_http_requests_total", "HTTP requests", ["route", "status"], registry=r)
        # flash-buy
        self.buys = Counter("live_buys_total", "Buy attempts by outcome", ["outcome"], registry=r)
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
