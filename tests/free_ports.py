"""Loopback ports for servers a test starts itself, chosen so that nothing takes them first.

A port found by binding port 0 comes from the kernel's ephemeral range, the same range
every other "any free port" bind draws from: Ray's own components, the S3 server and
proxy, client sockets. Between the probe and the server's own bind, one of them may
take it. These ports come from below that range and above Ray's worker ports, where
only an explicit request binds.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

RAY_WORKER_PORTS_END = 19999  # `ray start --max-worker-port` default


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that nothing listens on or is bound to now."""
    candidates = list(range(RAY_WORKER_PORTS_END + 1, _ephemeral_start()))
    random.shuffle(candidates)
    found: list[int] = []
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"fewer than {count} free loopback ports below the ephemeral range")
