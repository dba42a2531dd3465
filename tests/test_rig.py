"""The multi-host rig (bench/rig): hosts in network namespaces behind nginx, one host killed with -9
and Redis restarted from its AOF mid-run, the server's verdict still green, nothing left behind.

Needs root (``ip netns``); CI runs as root. The rig brings its own PostgreSQL, so the suite's
PostgreSQL pass would repeat the SQLite pass's run exactly: it runs in the SQLite pass only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from bench.rig.net import Network, sweep_leftovers
from bench.rig.run import RigConfig, run_rig

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the rig builds network namespaces: needs root"),
]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("LIVE_TEST_DATABASE_URL")),
                    reason="the rig runs its own PostgreSQL: the SQLite pass of the suite already ran it")
def test_rig_keeps_the_verdict_through_a_host_kill_and_a_redis_restart(tmp_path: Path) -> None:
    record_path = tmp_path / "rig.json"
    lines: list[str] = []
    cfg = RigConfig(scenario="soak", viewers=24, duration=14, workers=1, record=record_path)
    record = run_rig(cfg, say=lines.append)

    assert record["verdict"] == "ok", (record["problems"], record.get("log_tails"))
    assert orjson.loads(record_path.read_bytes())["verdict"] == "ok"
    faults = {f["fault"]: f for f in record["faults"]}
    kill, restart = faults["kill -9 app host"], faults["redis restart"]
    assert kill["host"] == "app1" and kill["pids"], kill
    assert not any(alive(p) for p in kill["pids"])
    assert kill["after_traffic_s"] < restart["after_traffic_s"] < cfg.duration
    report = record["load"]["report"]
    assert record["load"]["exit_code"] == 0
    assert report["lost_orders"] == 0 and report["duplicate_orders"] == 0 and report["oversold"] == 0
    assert report["sold"] == report["client_view"]["distinct_acked_orders"] > 0
    # Buying went on after both faults: acks in the seconds after Redis came back.
    per_s = report["acks_per_second"]
    assert sum(per_s[int(restart["after_traffic_s"]) + 2:]) > 0, per_s
    assert record["reconcile"]["exit_code"] == 0
    # Progress was printed, and the teardown removed every namespace of this rig.
    assert any("kill -9 app host" in line for line in lines) and "torn down" in lines[-1]
    assert not {ns for ns in namespaces() if ns.startswith(f"rig{os.getpid()}-")}


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("LIVE_TEST_DATABASE_URL")),
                    reason="the rig runs its own PostgreSQL: the SQLite pass of the suite already ran it")
def test_rig_goes_red_when_the_servers_lose_an_order(tmp_path: Path) -> None:
    cfg = RigConfig(scenario="soak", viewers=12, duration=10, apps=2, workers=1, record=tmp_path / "rig.json",
                    server_env={"LIVE_TEST_FAULTS": "1", "LIVE_FAULT_INJECTION": "lose_order"})
    record = run_rig(cfg, say=lambda line: None)

    assert record["verdict"] == "violated", (record["problems"], record.get("log_tails"))
    report = record["load"]["report"]
    assert record["load"]["exit_code"] == 1 and report["verdict"] == "violated"
    assert report["lost_orders"] >= 1
    assert any("missing in sql" in p for p in record["problems"]), record["problems"]  # live reconcile agrees
    assert not {ns for ns in namespaces() if ns.startswith(f"rig{os.getpid()}-")}


def test_load_generator_reaches_only_the_balancer() -> None:
    net = Network(prefix=f"rig{os.getpid()}")
    servers: list[subprocess.Popen[bytes]] = []
    try:
        net.up({"lb": 10, "app1": 11, "load": 100}, only={"load": ["lb"]})
        for name in ("lb", "app1"):
            h = net.hosts[name]
            servers.append(subprocess.Popen(["ip", "netns", "exec", h.ns, sys.executable, "-m", "http.server",
                                             "--bind", h.addr, "80"], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))

        def status(src: str, dst: str) -> str:
            res = subprocess.run(["ip", "netns", "exec", net.hosts[src].ns, "curl", "-s", "-o", "/dev/null",
                                  "-w", "%{http_code}", "-m", "1", f"http://{net.hosts[dst].addr}/"],
                                 capture_output=True, text=True)
            return res.stdout

        deadline = time.monotonic() + 15
        while status("load", "lb") != "200" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status("load", "lb") == "200"
        assert status("lb", "app1") == "200"
        assert status("load", "app1") == "000"  # no route: the load generator sees the balancer only
    finally:
        net.close()
    assert all(p.wait(5) is not None for p in servers)  # the teardown stopped what ran inside
    assert not {ns for ns in namespaces() if ns.startswith(f"rig{os.getpid()}-")}


def test_a_dead_rigs_namespaces_are_swept() -> None:
    dead = subprocess.Popen(["true"])  # its pid stands for a rig that was killed with -9
    dead.wait()
    net = Network(prefix=f"rig{dead.pid}")
    net.up({"app1": 11})
    sleeper = subprocess.Popen(["ip", "netns", "exec", net.hosts["app1"].ns, "sleep", "60"])
    try:
        assert f"rig{dead.pid}-app1" in namespaces()
        swept = sweep_leftovers()
        assert {f"rig{dead.pid}-app1", f"rig{dead.pid}-br"} <= set(swept)
        assert not {ns for ns in namespaces() if ns.startswith(f"rig{dead.pid}-")}
        assert sleeper.wait(10) is not None
    finally:
        net.close()
