"""Check that a Ray cluster address has something listening before ``ray.init`` joins it.

``ray.init`` retries an address where nothing listens for minutes, logging from
C++ as it goes; a mistyped host or port deserves one line at once instead.
"""

from __future__ import annotations

import os
import socket

from hflpipe.pipeline.common.errors import ConfigError

#: Seconds to wait for a TCP connection to the cluster's address.
CONNECT_TIMEOUT_S = 10.0


def _host_and_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT``; None for Ray's other forms."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`ConfigError` when ``address`` (or ``RAY_ADDRESS`` when it is None)
    names a host and port where nothing accepts a connection.

    ``auto``, ``local`` and forms without a port are left to Ray, which fails fast on them.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    target = _host_and_port(address) if address else None
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as exc:
        cause = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigError(f"ray cluster '{address}': cannot connect to {target[0]}:{target[1]}"
                          f" ({cause})") from None
