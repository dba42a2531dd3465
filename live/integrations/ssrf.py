"""The SSRF guard: webhook targets must be public addresses.

Checked twice: when a subscription is made (its host resolved now, refused as INVALID) and at
every connect, through :class:`GuardedResolver`, so a name that later resolves to a private
address (DNS rebinding) is refused before a socket is opened. Literal IP hosts skip aiohttp's
resolver, so the sender checks them itself (:func:`check_url`).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services that are not already link-local or private by their range.
METADATA = {ipaddress.ip_address(a) for a in ("100.100.100.200", "192.0.0.192", "fd00:ec2::254")}
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(ValueError):
    """The target is not allowed; the message says why."""


def embedded_v4(ip: IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo), if any: each of
    these reaches the IPv4 host, so it is judged as that host."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def allowed(ip: IP) -> bool:
    """True for a public unicast address: not loopback, private, link-local, CGNAT, multicast,
    unspecified, reserved, or a metadata service (including through an IPv6 wrapper)."""
    inner = embedded_v4(ip)
    if inner is not None:
        return allowed(inner)
    return ip.is_global and not ip.is_multicast and ip not in METADATA


def parse_target(url: str) -> tuple[str, int]:
    """``(host, port)`` of a webhook URL, or :class:`Refused` (only http and https, a host,
    no credentials in the URL)."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise Refused(f"not a valid URL: {e}") from e
    if u.scheme not in ("http", "https"):
        raise Refused("url must be http:// or https://")
    if not u.hostname:
        raise Refused("url has no host")
    if u.username is not None or u.password is not None:
        raise Refused("url must not carry credentials")
    if literal(u.hostname) is None:
        try:
            u.hostname.encode("idna")
        except UnicodeError as e:
            raise Refused(f"not a valid host name: {u.hostname}") from e
    return u.hostname, port or (443 if u.scheme == "https" else 80)


def literal(host: str) -> IP | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


async def check_url(url: str, allow_private: bool, timeout: float = 5.0) -> None:
    """Refuse ``url`` unless every address its host has now is public (or ``allow_private``)."""
    host, port = parse_target(url)
    if allow_private:
        return
    ip = literal(host)
    if ip is not None:
        addrs: list[IP] = [ip]
    else:
        try:
            async with asyncio.timeout(timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError, UnicodeError) as e:  # UnicodeError: a bad IDNA label
            raise Refused(f"cannot resolve {host}") from e
        addrs = [ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]) for i in infos]
    for a in addrs:
        if not allowed(a):
            raise Refused(f"{host} is a private, loopback, link-local or metadata address ({a})")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing a name when any of its addresses is not public. Checking
    every address (not only the first) leaves no room for a mixed answer to pick a bad one."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            for r in results:
                ip = literal(r["host"])
                if ip is None or not allowed(ip):
                    # (errno, text): aiohttp's connector error shows the text as the reason
                    raise OSError(errno.EACCES, f"{host} resolves to a refused address ({r['host']})")
        return results

    async def close(self) -> None:
        await self._inner.close()
