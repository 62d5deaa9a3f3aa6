"""Loopback ports for the servers tests start, chosen outside the kernel's ephemeral
range (``/proc/sys/net/ipv4/ip_local_port_range``): a port the kernel hands out for
outgoing connections can be taken by another process between the check and the
server's start; one below the range cannot, unless a server binds it on purpose."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int, span: int = 1) -> list[int]:
    """``count`` free loopback ports below the ephemeral range, each the first of
    ``span`` consecutive free ports."""
    low = 20_000
    high = min(ephemeral_range()[0], 32_768) - span
    found: list[int] = []
    for _ in range(2000):
        if len(found) == count:
            return found
        start = low + secrets.randbelow(high - low)
        block = range(start, start + span)
        if any(p in found or abs(p - f) < span for p in block for f in found):
            continue
        if all(_free(p) for p in block):
            found.append(start)
    raise RuntimeError(f"no {count} free loopback ports below the ephemeral range")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
