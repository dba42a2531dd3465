"""Network namespaces for the rig: one bridge namespace, one namespace per host, veth pairs.

Nothing is created in the root namespace: both ends of every veth pair are made directly inside
namespaces (``ip link add eth0 netns HOST type veth peer name HOST netns BRIDGE``), so interface
names never clash with the machine's or with another rig's. Namespace names carry the rig's pid
(``rig<pid>-app1``), so a later rig can tell a leftover of a dead one (its pid is gone) from a
rig still running, and remove it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field

from live.ops.embedded import pid_alive

SUBNET = "10.77.0"  # a private /24 that exists only on the bridge inside the rig's namespaces
_NAME = re.compile(r"^rig(\d+)-[a-z0-9]+$")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` and return it; raise with its stderr when ``check`` and it failed."""
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def pids_in(ns: str) -> list[int]:
    """Every process whose network namespace is ``ns`` (``ip netns pids``)."""
    res = ip("netns", "pids", ns, check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def kill_all(ns: str, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to every process in ``ns``; the pids it was sent to."""
    pids = pids_in(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return pids


def remove(*namespaces: str, grace_s: float = 3.0) -> None:
    """Stop every process in the namespaces (TERM to all, KILL to what is left after ``grace_s``)
    and delete them."""
    if sum(len(kill_all(ns, signal.SIGTERM)) for ns in namespaces):
        deadline = time.monotonic() + grace_s
        while any(pids_in(ns) for ns in namespaces) and time.monotonic() < deadline:
            time.sleep(0.1)
        for ns in namespaces:
            kill_all(ns, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(pids_in(ns) for ns in namespaces) and time.monotonic() < deadline:
            time.sleep(0.05)
    for ns in namespaces:
        ip("netns", "del", ns, check=False)


def sweep_leftovers() -> list[str]:
    """Remove the namespaces of rigs whose process is gone (a rig killed with -9); their names."""
    out = ip("netns", "list", check=False).stdout
    gone = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME.match(name)
        if m and not pid_alive(int(m.group(1))):
            remove(name, grace_s=1.0)
            gone.append(name)
    return gone


@dataclass
class Host:
    """One namespace on the bridge: its short name, namespace name and address."""

    name: str
    ns: str
    addr: str
    only_to: list[str] = field(default_factory=list)  # reach only these (the load generator → the balancer)


@dataclass
class Network:
    """The bridge namespace and the hosts plugged into it; ``close()`` removes them all."""

    prefix: str
    hosts: dict[str, Host] = field(default_factory=dict)
    made: list[str] = field(default_factory=list)

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-br"

    def up(self, layout: dict[str, int], only: dict[str, list[str]] | None = None) -> None:
        """Create the bridge and one namespace per ``name → last octet`` of ``layout``.

        ``only`` maps a host to the hosts it may reach: it gets a /32 address and one route per
        host named, so nothing else on the bridge is reachable from it.
        """
        only = only or {}
        self._add_ns(self.bridge_ns)
        br = ("netns", "exec", self.bridge_ns, "ip")
        ip(*br, "link", "add", "br0", "type", "bridge")
        ip(*br, "link", "set", "br0", "up")
        ip(*br, "link", "set", "lo", "up")
        for name, octet in layout.items():
            ns = f"{self.prefix}-{name}"
            self._add_ns(ns)
            ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", name, "netns", self.bridge_ns)
            ip(*br, "link", "set", name, "master", "br0")
            ip(*br, "link", "set", name, "up")
            addr = f"{SUBNET}.{octet}"
            inside = ("netns", "exec", ns, "ip")
            ip(*inside, "link", "set", "lo", "up")
            targets = only.get(name, [])
            ip(*inside, "addr", "add", f"{addr}/32" if targets else f"{addr}/24", "dev", "eth0")
            ip(*inside, "link", "set", "eth0", "up")
            host = Host(name, ns, addr)
            for target in targets:
                host.only_to.append(f"{SUBNET}.{layout[target]}")
                ip(*inside, "route", "add", f"{host.only_to[-1]}/32", "dev", "eth0")
            self.hosts[name] = host

    def _add_ns(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.made.append(ns)

    def close(self, last: tuple[str, ...] = ()) -> None:
        """Stop every process in the rig's namespaces and delete them (veths go with them).

        Hosts named in ``last`` (the backends) are stopped after all the others, so that the
        app hosts shut down cleanly against a Redis and a database that are still there.
        """
        late = {f"{self.prefix}-{n}" for n in last} | {self.bridge_ns}
        remove(*(ns for ns in reversed(self.made) if ns not in late))
        remove(*(ns for ns in reversed(self.made) if ns in late))
        self.made.clear()
