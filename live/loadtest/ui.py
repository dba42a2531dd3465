"""Rich progress bars while a load test runs (on stderr) and the final table (on stdout)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from live.loadtest.scenarios import Fleet, LoadConfig

# Lazy import of slot numbers would be circular; they are plain ints, so restate by name.
from live.loadtest.worker import ACKS, CARD_RX, DONE, GUESTS, JOINED, RX, SENT


class Ui:
    """Progress bars for the phases of a run; a no-op when disabled or not on a terminal."""

    def __init__(self, cfg: LoadConfig, enabled: bool = True) -> None:
        self.cfg = cfg
        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[int, TaskID] = {}

    def __enter__(self) -> Ui:
        if not self.enabled:
            return self
        n = self.cfg.viewers
        self.progress = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=False)
        bars: list[tuple[int, str, int | None]] = [(GUESTS, "guests", n), (JOINED, "joined", n)]
        sc = self.cfg.scenario
        if sc in ("flash", "soak"):
            bars.append((CARD_RX, "card received", n))
        if sc == "flash":
            bars.append((ACKS, "buy acks", n * self.cfg.taps))
        elif sc == "chat":
            bars += [(ACKS, "chat acks", n * self.cfg.messages), (RX, "chat received", None)]
        else:
            bars += [(SENT, "ops sent", None), (DONE, "viewers done", n)]
        for slot, name, total in bars:
            self.tasks[slot] = self.progress.add_task(name, total=total)
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def update(self, fleet: Fleet) -> None:
        if self.progress is None:
            return
        for slot, task in self.tasks.items():
            self.progress.update(task, completed=fleet.total(slot))

    def card_created(self, card_id: str) -> None:
        if self.progress is not None:
            self.progress.console.log(f"card {card_id} created")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _fmt(v: Any) -> str:
    if v is None:
        return "unknown"
    if isinstance(v, dict):
        return "  ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def render(data: dict[str, Any], console: Console | None = None) -> None:
    """The final table of a report."""
    console = console or Console()
    verdict = data.get("verdict")
    style = {"ok": "bold green", "violated": "bold red"}.get(str(verdict), "yellow")
    t = Table(title=f"live.loadtest {data.get('scenario')} → {data.get('url')} ({data.get('server')})",
              show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", overflow="fold")
    # The verdict first: it is the answer the run was for.
    order = ["verdict", "verdict_source", "viewers", "connected", "stock", "taps", "sold", "oversold", "lost_orders",
             "duplicate_orders", "over_limit_users", "acks", "buys_per_s", "accepted", "messages_per_s", "delivered",
             "expected_deliveries", "delivery_ratio", "ops_per_s", "latency_ms", "fanout_ms", "card_create_ms",
             "server_card", "client_view", "errors", "duration_s"]
    for key in order:
        if key in data:
            val = _fmt(data[key])
            t.add_row(key, f"[{style}]{val}[/]" if key == "verdict" else val)
    for op, row in (data.get("ops") or {}).items():
        t.add_row(f"op {op}", _fmt(row))
    c = data.get("client") or {}
    t.add_row("client cost", f"{_fmt(c.get('cpu_us_per_connection'))} µs/connection, "
                             f"{_fmt(c.get('cpu_us_per_message'))} µs/frame, {c.get('procs')} proc(s)")
    console.print(t)
