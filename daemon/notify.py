"""systemd notification protocol (READY, STOPPING, WATCHDOG, STATUS) without a dependency.

A no-op when ``NOTIFY_SOCKET`` is unset, so the daemon runs the same outside systemd.
"""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> bool:
    """Send ``KEY=value`` lines to systemd; True when a socket was there to take them."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall("\n".join(states).encode())
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's ``WatchdogSec`` in seconds, or None when the watchdog is off."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000
