"""The rig's run: build the namespaces, start the hosts, drive the load through the balancer,
inject the faults on schedule, collect the verdicts, tear everything down, write the record."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.procs import machine
from bench.rig.hosts import ROOT, RigError, Services, ensure_tools, in_ns, tail
from bench.rig.load import TRAFFIC_MARK
from bench.rig.net import Network, sweep_leftovers

HOOKED = ("flash", "chat", "soak")  # scenarios whose driver says when the traffic begins


@dataclass
class RigConfig:
    """One rehearsal. Fault times are seconds after the traffic began (``None``: a share of
    ``duration``: the host is killed at 30 %, Redis restarted at 60 %)."""

    scenario: str = "soak"
    viewers: int = 60
    duration: float = 30.0
    apps: int = 3
    workers: int = 2
    kill: str = "app1"
    kill_at: float | None = None
    redis_restart_at: float | None = None
    redis_down_s: float = 1.0
    redis_cluster: bool = False  # three masters (one namespace) instead of one redis-server
    revive_after: float | None = None  # restart the killed host this long after the kill
    load_args: list[str] = field(default_factory=list)
    server_env: dict[str, str] = field(default_factory=dict)  # more settings on every app host
    load_timeout: float = 600.0
    record: Path = Path("rig-record.json")
    keep: bool = False

    def load_command(self, url: str, json_path: Path) -> list[str]:
        cmd = [sys.executable, "-P", "-m", "bench.rig.load", self.scenario, "--url", url,
               "--viewers", str(self.viewers), "--json", str(json_path), "--no-progress"]
        if self.scenario == "soak":
            cmd += ["--duration", str(self.duration)]
        elif self.scenario == "flash" and "--stock" not in self.load_args:
            cmd += ["--stock", str(max(1, self.viewers // 2))]
        return cmd + self.load_args


class Timeline:
    """Events with their time since the rig started; each one printed as it happens."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.t0 = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.say = say

    def now(self) -> float:
        return time.monotonic() - self.t0

    def __call__(self, event: str, **info: Any) -> None:
        t = round(self.now(), 2)
        self.events.append({"t_s": t, "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                            "event": event, **info})
        extra = "  ".join(f"{k}={v}" for k, v in info.items())
        self.say(f"[rig {t:7.1f}s] {event}" + (f"  {extra}" if extra else ""))


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP end the run with the teardown (SIGINT too: a shell starting the
    rig in the background makes it ignore SIGINT, and ``kill -INT`` must still stop it)."""
    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class LoadProcess:
    """The load generator in its namespace; its output is kept and watched for the traffic mark."""

    def __init__(self, ns: str, cmd: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.traffic = threading.Event()
        self.popen = subprocess.Popen(in_ns(ns, cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=str(ROOT), start_new_session=True,
                                      env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.log.open("wb") as out:
            for line in self.popen.stdout:
                out.write(line)
                out.flush()
                if line.decode(errors="replace").strip() == TRAFFIC_MARK:
                    self.traffic.set()

    def wait_output(self) -> None:
        self._reader.join(10)


def _option(args: list[str], name: str) -> str | None:
    """The value of ``name`` in ``args`` (``--x V`` or ``--x=V``), or None."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def scenario_env(cfg: RigConfig) -> dict[str, str]:
    """Settings the scenario needs on every app host. ``double11`` against ``--url`` does not set
    its timeline's ``[server]`` settings (deadlines in seconds, scaled by ``--time-factor``) on
    the server, so the rig does, as the scenario does on a server it starts itself."""
    if cfg.scenario != "double11":
        return {}
    try:  # imported by name: a checkout without the scenario still runs the other ones
        timeline: Any = importlib.import_module("live.loadtest.double11.timeline")
    except ImportError:
        raise RigError("this checkout has no double11 scenario") from None
    path = _option(cfg.load_args, "--timeline")
    factor = float(_option(cfg.load_args, "--time-factor") or 1.0)
    env: dict[str, str] = timeline.load(Path(path) if path else None).server_env(factor)
    return {"LIVE_ROOM_IDLE_END_S": "86400", "LIVE_SWEEPER_INTERVAL_S": "0.5", **env}


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def run_rig(cfg: RigConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one rehearsal and return its record (also written to ``cfg.record``)."""
    tl = Timeline(say)
    record: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
        "loadavg_before": loadavg(), "config": {k: str(v) if isinstance(v, Path) else v
                                                for k, v in cfg.__dict__.items()},
        "command": " ".join(sys.argv), "timeline": tl.events, "faults": [], "verdict": "failed", "problems": [],
    }
    gone = sweep_leftovers()
    if gone:
        tl("removed leftovers of a dead rig", namespaces=gone)
    work = Path(tempfile.mkdtemp(prefix="live-rig-"))
    work.chmod(0o755)  # postgres (its own user) works in a folder below
    net = Network(prefix=f"rig{os.getpid()}")
    svc: Services | None = None
    try:
        with _signals_raise():
            tools = ensure_tools()
            apps = [f"app{i}" for i in range(1, cfg.apps + 1)]
            if cfg.kill not in apps:
                raise RigError(f"--kill {cfg.kill}: no such app host (have {', '.join(apps)})")
            layout = {"redis": 2, "pg": 3, "lb": 10, **{a: 10 + i for i, a in enumerate(apps, 1)}, "load": 100}
            # double11's webhook receiver runs in the load generator: the app hosts must reach it back.
            back = apps if cfg.scenario == "double11" else []
            net.up(layout, only={"load": ["lb", *back]})
            record["topology"] = {h.name: {"namespace": h.ns, "addr": h.addr, **({"reaches_only": h.only_to}
                                                                                  if h.only_to else {})}
                                  for h in net.hosts.values()}
            tl("network up", bridge=net.bridge_ns, hosts=len(net.hosts))
            env = {**scenario_env(cfg), **cfg.server_env}
            svc = Services(work, tools, net.hosts, workers=cfg.workers, extra_env=env, redis_cluster=cfg.redis_cluster)
            svc.start_redis()
            tl("redis up", url=svc.redis_url, aof="everysec", cluster=f"{len(svc.redis_ports)} masters"
               if cfg.redis_cluster else "no")
            svc.start_pg()
            tl("postgresql up", url=svc.database_url.replace("+asyncpg", ""))
            for a in apps:
                svc.start_app(a)
            for a in apps:
                svc.wait_app(a)
            tl("app hosts healthy", hosts=",".join(apps), workers=cfg.workers)
            svc.start_nginx(apps)
            tl("balancer up", url=svc.lb_url)
            _drive(cfg, svc, tl, record, work)
    except KeyboardInterrupt as e:
        record["problems"].append(f"interrupted ({e or 'Ctrl-C'})")
        tl("interrupted")
    except Exception as e:  # the rig's own failure: recorded as such, never mistaken for a verdict
        what = str(e) if isinstance(e, RigError) else f"{type(e).__name__}: {e}"
        record["problems"].append(f"rig: {what}")
        tl("rig failed", error=(what.splitlines() or [""])[0])
    finally:
        if svc is not None and record["verdict"] != "ok":
            record["log_tails"] = {name: tail(s.log, 20) for name, s in svc.started.items()}
        net.close(last=("redis", "pg"))
        tl("torn down", namespaces="removed", workdir="kept at " + str(work) if cfg.keep else "removed")
        if not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
        record["loadavg_after"] = loadavg()
        record["duration_s"] = round(tl.now(), 2)
        cfg.record.parent.mkdir(parents=True, exist_ok=True)
        cfg.record.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
    return record


def _drive(cfg: RigConfig, svc: Services, tl: Timeline, record: dict[str, Any], work: Path) -> None:
    load_json = work / "load.json"
    cmd = cfg.load_command(svc.lb_url, load_json)
    record["load_command"] = " ".join(["python", *cmd[1:]])
    t_start = time.monotonic()
    load = LoadProcess(svc.hosts["load"].ns, cmd, work / "logs" / "load.log", svc.load_env())
    tl("load started", scenario=cfg.scenario, viewers=cfg.viewers, through=svc.lb_url)
    span = cfg.duration
    pending = sorted([
        (cfg.kill_at if cfg.kill_at is not None else 0.3 * span, "kill"),
        (cfg.redis_restart_at if cfg.redis_restart_at is not None else 0.6 * span, "redis"),
    ])
    t_traffic: float | None = None
    try:
        while load.popen.poll() is None:
            now = time.monotonic()
            if t_traffic is None and (load.traffic.is_set() or cfg.scenario not in HOOKED):
                t_traffic = now
                tl("traffic began" if cfg.scenario in HOOKED else "faults timed from the load's start")
            while t_traffic is not None and pending and now - t_traffic >= pending[0][0]:
                _, what = pending.pop(0)
                _inject(what, cfg, svc, tl, record, pending, now - t_traffic)
            if now - t_start > cfg.load_timeout:
                raise RigError(f"the load did not finish within {cfg.load_timeout:.0f} s")
            time.sleep(0.05)
    finally:
        if load.popen.poll() is None:
            os.killpg(load.popen.pid, signal.SIGKILL)
        load.popen.wait()
        load.wait_output()
    code = load.popen.returncode
    tl("load finished", exit_code=code)
    record["cpu_s_at_end"] = svc.cpu()
    report: dict[str, Any] = {}
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        report = orjson.loads(load_json.read_bytes())
    keys = ("verdict", "verdict_source", "sold", "oversold", "lost_orders", "duplicate_orders", "over_limit_users",
            "acks", "connected", "errors", "latency_ms", "acks_per_second", "server_card", "client_view", "audit")
    summary = {k: report[k] for k in keys if k in report}
    # double11: which of the judge's checks held, the orders' fates and the webhook deliveries.
    if isinstance(report.get("checks"), list):
        summary["checks"] = {str(c.get("name")): c.get("ok") for c in report["checks"] if isinstance(c, dict)}
    for k in ("failed_checks", "orders", "orders_by_status", "webhook_deliveries"):
        if k in report:
            summary[k] = report[k]
    record["load"] = {"exit_code": code, "report": summary, "output_tail": tail(load.log, 25)}
    if pending:
        record["problems"].append("faults not injected before the load ended: " + ", ".join(w for _, w in pending)
                                  + " (lengthen the run or move them earlier)")
    if code != 0:
        why = next((ln for ln in reversed(tail(load.log, 25).splitlines()) if "failed" in ln), "")
        record["problems"].append(f"load exit code {code}" + (f": {why[:300]}" if why else ""))
    if report.get("verdict") != "ok":
        record["problems"].append(f"scenario verdict {report.get('verdict')!r}: {report.get('verdict_source', '')}")
    rec = record["reconcile"] = _reconcile(cfg, svc, tl)
    bad_cards = [r for r in rec.get("report", []) if not r.get("ok")]
    if "report" not in rec:
        record["problems"].append(f"live reconcile did not report (exit code {rec['exit_code']})")
    elif bad_cards:
        record["problems"].append("live reconcile: " + "; ".join(f"card {r['card_id']}: {', '.join(r['problems'])}"
                                                                  for r in bad_cards))
    # Violated: the server's own records say something is wrong. Anything else not green is a
    # failed run (the rig, the load or a check could not finish), which proves nothing either way.
    violated = report.get("verdict") == "violated" or bool(bad_cards)
    record["verdict"] = "ok" if not record["problems"] else ("violated" if violated else "failed")
    tl("verdict", verdict=record["verdict"], sold=report.get("sold"), lost=report.get("lost_orders"),
       duplicates=report.get("duplicate_orders"), oversold=report.get("oversold"))


def _inject(what: str, cfg: RigConfig, svc: Services, tl: Timeline, record: dict[str, Any],
            pending: list[tuple[float, str]], at: float) -> None:
    if what == "kill":
        pids = svc.kill_host(cfg.kill)
        tl("kill -9 app host", host=cfg.kill, processes=len(pids))
        record["faults"].append({"fault": "kill -9 app host", "host": cfg.kill, "pids": pids,
                                 "after_traffic_s": round(at, 2), "t_s": round(tl.now(), 2)})
        if cfg.revive_after is not None:
            pending.append((at + cfg.revive_after, "revive"))
            pending.sort()
    elif what == "redis":
        stop_s = svc.stop_redis()
        tl("redis stopped", how="SIGTERM (AOF fsynced)", took_s=round(stop_s, 2))
        time.sleep(cfg.redis_down_s)
        aof = svc.aof_bytes()
        svc.start_redis(first=False)
        tl("redis started from its AOF", aof_bytes=aof)
        record["faults"].append({"fault": "redis restart", "after_traffic_s": round(at, 2),
                                 "down_s": round(stop_s + cfg.redis_down_s, 2), "aof_bytes": aof,
                                 "t_s": round(tl.now(), 2)})
    elif what == "revive":
        svc.start_app(cfg.kill)
        tl("app host restarted", host=cfg.kill)
        record["faults"].append({"fault": "app host restarted", "host": cfg.kill, "after_traffic_s": round(at, 2),
                                 "t_s": round(tl.now(), 2)})


def _reconcile(cfg: RigConfig, svc: Services, tl: Timeline) -> dict[str, Any]:
    """``live reconcile --json`` from a surviving host, on the shared Redis and PostgreSQL."""
    host = next(n for n in svc.hosts if n.startswith("app") and n != cfg.kill)
    res = subprocess.run(in_ns(svc.hosts[host].ns, [sys.executable, "-P", "-m", "live.ops.cli", "reconcile",
                                                    "--json"]),
                         env=svc.app_env(host), cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    out: dict[str, Any] = {"exit_code": res.returncode, "from": host}
    try:
        parsed = orjson.loads(res.stdout)
        out["report"] = parsed
    except orjson.JSONDecodeError:
        out["output"] = (res.stdout + res.stderr)[-2000:]
    tl("live reconcile", exit_code=res.returncode)
    return out
