"""The hot-path metrics (``LoopCounter``, ``LoopHistogram``) expose exactly what
prometheus_client's own Counter and Histogram would, given the same updates."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from live.core.metrics import LATENCY_BUCKETS, LoopCounter, LoopHistogram, Metrics


def test_loop_metrics_expose_what_prometheus_client_would() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("live_handler_seconds", "Handler latency", ["handler"], registry=theirs, buckets=LATENCY_BUCKETS)
    c1 = Counter("live_buys_total", "Buy attempts by outcome", ["outcome"], registry=theirs)
    h2 = LoopHistogram("live_handler_seconds", "Handler latency", ["handler"], ours, LATENCY_BUCKETS)
    c2 = LoopCounter("live_buys_total", "Buy attempts by outcome", ["outcome"], ours)
    # Values on bucket bounds (le is inclusive), between them, below the first and above the last.
    for v in (0.0001, 0.0005, 0.0007, 0.003, 1, 2.5, 7, 0.02):
        for h in (h1, h2):
            h.labels("sio flash:buy").observe(v)
    for c in (c1, c2):
        c.labels("ok").inc()
        c.labels("ok").inc(3)
        c.labels("sold_out").inc()
    expected = [line for line in generate_latest(theirs).decode().splitlines() if "_created" not in line]
    assert generate_latest(ours).decode().splitlines() == expected


def test_the_app_registry_renders_the_hot_path_metrics() -> None:
    m = Metrics()
    m.events.labels("flash:buy").inc()
    m.latency.labels("sio flash:buy").observe(0.002)
    m.errors.labels("socket", "SOLD_OUT").inc()
    text = m.render().decode()
    assert 'live_socket_events_total{event="flash:buy"} 1.0' in text
    assert 'live_handler_seconds_bucket{handler="sio flash:buy",le="0.0025"} 1.0' in text
    assert 'live_errors_total{code="SOLD_OUT",where="socket"} 1.0' in text
