"""What runs in the rig's namespaces: Redis, PostgreSQL, the app hosts, nginx; and how to reach
them from outside (every probe runs inside a namespace with ``ip netns exec``)."""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import cpu_seconds
from bench.rig.net import Host, kill_all, pids_in

ROOT = Path(__file__).resolve().parent.parent.parent
APP_PORT = 8080
REDIS_PORT = 6379
PG_PORT = 5432


class RigError(Exception):
    """The rig could not be built or run (not a verdict on the server)."""


def ensure_tools() -> dict[str, str]:
    """Paths of nginx, redis-server and PostgreSQL's binaries; installs nginx with apt if missing
    (the Debian package; its system service is left disabled — the rig runs its own nginx)."""
    if os.geteuid() != 0:
        raise RigError("the rig needs root (ip netns, veth, running PostgreSQL as its user)")
    for tool, package in (("ip", "iproute2"), ("curl", "curl"), ("redis-cli", "redis-tools"),
                          ("runuser", "util-linux")):
        if shutil.which(tool) is None:
            raise RigError(f"`{tool}` is not installed (Debian package {package})")
    if shutil.which("nginx") is None:
        print("rig: nginx is missing; installing the Debian package (apt-get install -y nginx)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        res = subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise RigError(f"apt-get install nginx failed: {res.stderr.strip()[-300:]}")
        if shutil.which("systemctl"):
            subprocess.run(["systemctl", "disable", "nginx"], capture_output=True)
    redis = shutil.which("redis-server")
    if redis is None:
        raise RigError("redis-server is not installed")
    pg = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not pg:
        raise RigError("no PostgreSQL server under /usr/lib/postgresql/*/bin")
    return {"nginx": str(shutil.which("nginx")), "redis": redis, "pg_bin": str(Path(pg[-1]).parent)}


def in_ns(ns: str, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def probe(ns: str, url: str, timeout_s: float = 2.0) -> int:
    """HTTP status of ``url`` fetched from inside ``ns`` (0 when nothing answered)."""
    res = subprocess.run(in_ns(ns, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", str(timeout_s),
                                    url]), capture_output=True, text=True)
    try:
        return int(res.stdout.strip() or 0)
    except ValueError:
        return 0


@dataclass
class Service:
    """A process started in a namespace, with its log."""

    name: str
    host: Host
    popen: subprocess.Popen[bytes]
    log: Path

    def running(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Services:
    """Starts and stops the rig's processes; every one of them lives in some namespace, so the
    network's ``close()`` stops whatever is left."""

    work: Path
    tools: dict[str, str]
    hosts: dict[str, Host]
    workers: int = 2
    secret: str = field(default_factory=lambda: os.urandom(16).hex())
    admin_token: str = field(default_factory=lambda: "rig-admin-" + os.urandom(12).hex())
    payment_secret: str = field(default_factory=lambda: "rig-pay-" + os.urandom(12).hex())
    started: dict[str, Service] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)  # settings the scenario needs on every host
    redis_cluster: bool = False

    def _spawn(self, name: str, host: Host, cmd: list[str], env: dict[str, str] | None = None,
               cwd: Path | None = None) -> Service:
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            p = subprocess.Popen(in_ns(host.ns, cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=str(cwd) if cwd else None, start_new_session=True)
        svc = Service(name, host, p, log)
        self.started[name] = svc
        return svc

    def _wait(self, what: str, ok: Callable[[], bool], svc: Service | None, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ok():
                return
            if svc is not None and not svc.running():
                raise RigError(f"{what} exited with {svc.popen.returncode}; last lines:\n{tail(svc.log)}")
            time.sleep(0.2)
        last = f"; last lines:\n{tail(svc.log)}" if svc else ""
        raise RigError(f"{what} not ready within {timeout_s:.0f} s{last}")

    # --- Redis -----------------------------------------------------------------------------
    @property
    def redis_ports(self) -> list[int]:
        """One port, or three for a Redis Cluster (``--redis-cluster``): three masters, no replicas."""
        return [REDIS_PORT + i for i in range(3)] if self.redis_cluster else [REDIS_PORT]

    @property
    def redis_url(self) -> str:
        return f"redis://{self.hosts['redis'].addr}:{REDIS_PORT}/0"

    def _redis_cli(self, port: int, *args: str) -> str:
        h = self.hosts["redis"]
        res = subprocess.run(in_ns(h.ns, ["redis-cli", "-h", h.addr, "-p", str(port), *args]),
                             capture_output=True, text=True, timeout=60)
        return res.stdout

    def _answers(self, port: int, *args: str, want: str) -> bool:
        return want in self._redis_cli(port, *args)

    def start_redis(self, first: bool = True) -> None:
        """redis-server with AOF (everysec) in its own dir; a restart reads the same AOF (and, on a
        cluster, its ``nodes.conf``) back. ``first``: a new cluster is created once its nodes answer."""
        h = self.hosts["redis"]
        nodes = []
        for port in self.redis_ports:
            d = self.work / f"redis-{port}"
            d.mkdir(exist_ok=True)
            cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] if self.redis_cluster else []
            nodes.append((port, self._spawn(f"redis-{port}", h, [
                self.tools["redis"], "--bind", h.addr, "--port", str(port), "--protected-mode", "no",
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", str(d),
                "--maxclients", "20000", *cluster])))
        for port, svc in nodes:
            self._wait(f"redis-server :{port}", functools.partial(self._answers, port, "ping", want="PONG"), svc, 20)
        if not self.redis_cluster:
            return
        if first:
            out = self._redis_cli(REDIS_PORT, "--cluster", "create", *[f"{h.addr}:{p}" for p in self.redis_ports],
                                  "--cluster-replicas", "0", "--cluster-yes")
            if "All 16384 slots covered" not in out:
                raise RigError(f"redis-cli --cluster create: {out.strip()[-300:]}")
        for port, svc in nodes:
            self._wait(f"redis cluster node :{port}",
                       functools.partial(self._answers, port, "cluster", "info", want="cluster_state:ok"), svc, 30)

    def stop_redis(self) -> float:
        """SIGTERM to every node (Redis fsyncs its AOF and exits); the seconds it took."""
        t = time.monotonic()
        procs = [self.started[f"redis-{p}"].popen for p in self.redis_ports]
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return time.monotonic() - t

    def aof_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.work.glob("redis-*/**/*") if p.is_file() and "appendonly" in str(p))

    # --- PostgreSQL ------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://postgres@{self.hosts['pg'].addr}:{PG_PORT}/live"

    def start_pg(self) -> Service:
        """A private cluster: initdb as ``postgres`` in the rig's temp dir, trust on the bridge."""
        h = self.hosts["pg"]
        bin_ = Path(self.tools["pg_bin"])
        data = self.work / "pg"
        sock = self.work / "pgsock"
        for d in (data, sock):
            d.mkdir(exist_ok=True)
            shutil.chown(d, "postgres", "postgres")
        data.chmod(0o700)
        res = subprocess.run(["runuser", "-u", "postgres", "--", str(bin_ / "initdb"), "-D", str(data), "-U",
                              "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"], capture_output=True, text=True)
        if res.returncode != 0:
            raise RigError(f"initdb failed: {res.stderr.strip()[-400:]}")
        with (data / "pg_hba.conf").open("a") as f:
            f.write("host all all 10.0.0.0/8 trust\n")
        svc = self._spawn("pg", h, ["runuser", "-u", "postgres", "--", str(bin_ / "postgres"), "-D", str(data),
                                    "-k", str(sock), "-c", f"listen_addresses={h.addr}", "-c", f"port={PG_PORT}",
                                    "-c", "max_connections=400", "-c", "shared_buffers=64MB"])

        def ready() -> bool:
            return subprocess.run(in_ns(h.ns, [str(bin_ / "pg_isready"), "-q", "-h", h.addr, "-p", str(PG_PORT)]),
                                  capture_output=True).returncode == 0

        self._wait("postgres", ready, svc, 30)
        res = subprocess.run(in_ns(h.ns, [str(bin_ / "createdb"), "-h", h.addr, "-p", str(PG_PORT), "-U", "postgres",
                                          "live"]), capture_output=True, text=True)
        if res.returncode != 0:
            raise RigError(f"createdb failed: {res.stderr.strip()}")
        return svc

    # --- app hosts -------------------------------------------------------------------------
    def app_env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
        env.update({
            "LIVE_REDIS_URL": self.redis_url, "LIVE_DATABASE_URL": self.database_url, "LIVE_SECRET": self.secret,
            # Shared by every host and handed to the load generator (scenarios that moderate or pay).
            "LIVE_ADMIN_TOKEN": self.admin_token, "LIVE_PAYMENT_SECRET": self.payment_secret,
            "LIVE_WEBHOOK_ALLOW_PRIVATE": "true",  # webhook receivers live on the rig's private subnet
            "LIVE_DATA_DIR": str(self.work / name), "LIVE_LOG_LEVEL": "WARNING",
            "LIVE_SOCKETIO_REDIS_MANAGER": "on",
            # The load generator mints every viewer from one address: the per-address guest limit is off.
            "LIVE_GUEST_RATE_PER_S": "1000000", "LIVE_GUEST_RATE_BURST": "1000000",
            "PYTHONPATH": str(ROOT),
            **({"LIVE_REDIS_CLUSTER": "1"} if self.redis_cluster else {}),
            **self.extra_env,
        })
        return env

    def load_env(self) -> dict[str, str]:
        """The load generator's environment: the deployment's moderator and payment keys."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_")}
        env.update({"LIVE_ADMIN_TOKEN": self.admin_token, "LIVE_PAYMENT_SECRET": self.payment_secret,
                    "PYTHONPATH": str(ROOT), "RIG_HOOK_HOST": self.hosts["load"].addr})
        return env

    def app_url(self, name: str) -> str:
        return f"http://{self.hosts[name].addr}:{APP_PORT}"

    def start_app(self, name: str) -> Service:
        """``live-server --workers N`` on the shared Redis and PostgreSQL (not yet waited for)."""
        h = self.hosts[name]
        return self._spawn(name, h, [sys.executable, "-P", "-m", "live.app.main", "--host", h.addr, "--port",
                                     str(APP_PORT), "--workers", str(self.workers)], env=self.app_env(name), cwd=ROOT)

    def wait_app(self, name: str, timeout_s: float = 120) -> None:
        url = self.app_url(name) + "/healthz"
        self._wait(f"app host {name}", lambda: probe(self.hosts["lb"].ns, url) == 200, self.started[name], timeout_s)

    def kill_host(self, name: str) -> list[int]:
        """kill -9 every process in the host's namespace (the supervisor and all its workers)."""
        pids = kill_all(self.hosts[name].ns)
        deadline = time.monotonic() + 10
        while pids_in(self.hosts[name].ns) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.started[name].popen.poll()
        return pids

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) of the processes alive in each host's namespace now; a
        killed host's processes are gone with their counts, a restarted one counts from its start."""
        out = {}
        for name, h in self.hosts.items():
            total = 0.0
            for pid in pids_in(h.ns):
                with contextlib.suppress(OSError):
                    total += cpu_seconds(pid)
            out[name] = round(total, 2)
        return out

    # --- the balancer ----------------------------------------------------------------------
    @property
    def lb_url(self) -> str:
        return f"http://{self.hosts['lb'].addr}"

    def start_nginx(self, apps: list[str]) -> Service:
        h = self.hosts["lb"]
        prefix = self.work / "nginx"
        prefix.mkdir(exist_ok=True)
        servers = "\n".join(f"        server {self.hosts[a].addr}:{APP_PORT} max_fails=1 fail_timeout=5s;"
                            for a in apps)
        conf = (Path(__file__).with_name("nginx.conf.in").read_text()
                .replace("{{prefix}}", str(prefix)).replace("{{servers}}", servers)
                .replace("{{listen}}", f"{h.addr}:80"))
        (prefix / "nginx.conf").write_text(conf)
        args = ["-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
        test = subprocess.run(in_ns(h.ns, [self.tools["nginx"], "-t", "-q", *args]), capture_output=True, text=True)
        if test.returncode != 0:
            raise RigError(f"nginx -t: {test.stderr.strip()}")
        svc = self._spawn("nginx", h, [self.tools["nginx"], *args])
        load = self.hosts["load"]
        self._wait("nginx", lambda: probe(load.ns, self.lb_url + "/healthz") == 200, svc, 30)
        return svc


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
