"""``python -m bench.rig``: see the package docstring. Exit status 0 when the verdict is ok,
1 when the server's records show a violation, 2 when the rig or the run failed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.rig.run import RigConfig, run_rig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.rig", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Rehearse a multi-host deployment in network namespaces on this "
                                            "machine (needs root). Options after `--` go to the load tester.")
    p.add_argument("--scenario", default="soak", help="live.loadtest scenario (soak, flash, chat, double11, ...)")
    p.add_argument("--viewers", type=int, default=60, help="viewers of the load test")
    p.add_argument("--duration", type=float, default=30.0,
                   help="soak: seconds of traffic; for every scenario the span the default fault times are shares of")
    p.add_argument("--apps", type=int, default=3, help="app hosts behind the balancer")
    p.add_argument("--workers", type=int, default=2, help="live-server --workers on each app host")
    p.add_argument("--kill", default="app1", help="the app host to kill -9 mid-run")
    p.add_argument("--kill-at", type=float, default=None,
                   help="seconds after the traffic began (default: 30%% of --duration)")
    p.add_argument("--redis-restart-at", type=float, default=None,
                   help="seconds after the traffic began (default: 60%% of --duration)")
    p.add_argument("--redis-cluster", action="store_true",
                   help="a Redis Cluster of three masters (LIVE_REDIS_CLUSTER=1) instead of one redis-server")
    p.add_argument("--redis-down", type=float, default=1.0, help="seconds Redis stays stopped")
    p.add_argument("--revive-after", type=float, default=None, help="restart the killed host this long after the kill")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for every app host, e.g. LIVE_ORDER_DURABILITY=disk (repeatable)")
    p.add_argument("--load-timeout", type=float, default=600.0, help="give up on the load after this many seconds")
    p.add_argument("--record", type=Path, default=Path("var/rig/rig-record.json"), help="the JSON record of the run")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, AOF, PostgreSQL data)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    a = parser().parse_args(argv)
    if a.viewers < 1 or a.apps < 2 or a.workers < 1 or a.duration <= 0:
        print("viewers and workers must be ≥ 1, apps ≥ 2 (one is killed), duration > 0", file=sys.stderr)
        return 2
    server_env = dict(kv.split("=", 1) for kv in a.server_env if "=" in kv)
    if len(server_env) != len(a.server_env):
        print("--server-env takes NAME=VALUE", file=sys.stderr)
        return 2
    cfg = RigConfig(scenario=a.scenario, viewers=a.viewers, duration=a.duration, apps=a.apps, workers=a.workers,
                    kill=a.kill, kill_at=a.kill_at, redis_restart_at=a.redis_restart_at, redis_down_s=a.redis_down,
                    redis_cluster=a.redis_cluster,
                    revive_after=a.revive_after, load_args=extra, server_env=server_env,
                    load_timeout=a.load_timeout, record=a.record, keep=a.keep)
    record = run_rig(cfg)
    print(f"rig: verdict {record['verdict']}" + "".join(f"\n  - {p}" for p in record["problems"])
          + f"\nrig: record written to {cfg.record}", flush=True)
    return {"ok": 0, "violated": 1}.get(record["verdict"], 2)


if __name__ == "__main__":
    sys.exit(main())
