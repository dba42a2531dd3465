"""Live progress of a rehearsal (one bar over the phases, a log line per phase, on stderr) and
the final table (verdict first, on stdout)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from live.loadtest.double11.timeline import Timeline


class PhaseUi:
    def __init__(self, timeline: Timeline, enabled: bool = True) -> None:
        self.timeline = timeline
        self.console = Console(stderr=True, log_path=False)
        self.enabled = enabled
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> PhaseUi:
        if self.enabled and self.console.is_terminal:
            self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=self.console)
            self.task = self.progress.add_task("setting the stage", total=len(self.timeline.phases))
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def update(self, label: str, info: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if "done" in info:
            mark = "[green]ok[/]" if info.get("checks_ok") else "[bold red]FAILED[/]"
            line = f"phase {label}: {mark} {_short(info['done'])}"
        elif "starting" in info:
            line = ""
            if self.progress is not None and self.task is not None:
                self.progress.update(self.task, description=f"phase {label}")
        elif label == "verdict":
            line = "final verdict: " + ("[green]ok[/]" if info.get("checks_ok") else "[bold red]violated[/]")
        else:
            line = f"{label}: {_short(info)}"
        if line:
            (self.progress.console if self.progress is not None else self.console).log(line)
        if "done" in info and self.progress is not None and self.task is not None:
            self.progress.advance(self.task)


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) < 200 else text[:197] + "..."


def render_verdict(data: dict[str, Any], console: Console) -> None:
    """The final table: the verdict and every failed check first, then per phase, then figures."""
    ok = data.get("verdict") == "ok"
    t = Table(title=f"live.loadtest double11 → {data.get('url')}", show_header=True, header_style="bold")
    t.add_column("")
    t.add_column("value", overflow="fold")
    t.add_row("verdict", "[bold green]ok[/]" if ok else "[bold red]violated[/]")
    for c in data.get("failed_checks") or []:
        t.add_row(f"[red]FAILED[/] {c['phase']}", f"{c['name']}: {_short(c['detail'])}")
    for c in data.get("checks") or []:
        if c["ok"]:
            t.add_row("ok", c["name"])
    for p in data.get("phases") or []:
        t.add_row(f"phase {p['label']} @{p['at_s']}s", ("ok " if p["ok"] else "FAILED ") + _short(p["summary"]))
    for k in ("viewers", "connected", "orders", "orders_by_status", "after_sales_paths", "late_payments",
              "chat_private_sent", "chat_private_blocked", "webhook_deliveries", "latency_ms", "errors", "duration_s"):
        if k in data:
            t.add_row(k, _short(data[k]))
    console.print(t)
