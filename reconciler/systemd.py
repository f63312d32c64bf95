"""Talk to systemd without libsystemd: sd_notify over $NOTIFY_SOCKET, and the watchdog interval.

The protocol is one datagram of newline-separated KEY=VALUE pairs to a unix socket whose path is in
$NOTIFY_SOCKET (a leading '@' means the abstract namespace). Outside systemd the variable is unset
and every call here does nothing, so the daemon needs no special mode for the terminal.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends READY/RELOADING/STOPPING/STATUS/WATCHDOG to systemd when it is listening."""

    def __init__(self, *, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def send(self, **fields: str | int) -> bool:
        """`send(READY=1, STATUS="...")`; never raises: a lost notification must not stop the daemon."""
        if self._sock is None:
            return False
        text = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        try:
            self._sock.sendto(text.encode(), self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def reloading(self) -> None:
        self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> None:
        self.send(STOPPING=1, STATUS="stopping")

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), when systemd asked for them."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


def _one_line(text: str) -> str:
    return text.replace("\n", " ")
