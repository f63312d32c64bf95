"""The daemon's HTTP API as a runnable: the socket bound before anything runs, uvicorn serving on it.

Binding up front makes a taken port or a bad address refuse the start clearly, before the workers
claim anything. The daemon owns the signals, so uvicorn's own handlers are switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .options import DaemonRefused

if TYPE_CHECKING:
    from ..api import Plane


class ApiServer:
    """uvicorn on a socket of our own, serving api.create_app(plane)."""

    name = "api"

    def __init__(self, *, address: str, plane: Plane, log: Any) -> None:
        self.address = address
        self.plane = plane
        self.log = log
        self._listener: Any = None
        self._server: Any = None

    def prepare(self) -> None:
        self._listener = bind_api(address=self.address, secured=self.plane.keys() is not None)
        self._server = _server(plane=self.plane)
        self.log.info("api listening", address=self.address, token_required=self.plane.keys() is not None,
                      reads_need_token=not self.plane.open_reads)

    async def run(self, stop: asyncio.Event) -> None:
        await self._server.serve(sockets=[self._listener])

    async def close(self) -> None:
        self._server.should_exit = True


def bind_api(*, address: str, secured: bool) -> Any:
    """Bind the API's socket up front, so a taken port or a bad address fails the start clearly.

    `secured`: whether any token is configured; beyond loopback the API refuses to listen without one.
    """
    import socket

    host, port, loopback = listen_address(address)
    if not loopback and not secured:
        raise DaemonRefused(f"refusing to serve the API on {address} without --api-token-file or --api-tokens "
                            "(only loopback addresses may go without a token)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DaemonRefused(f"cannot listen on {address}: {exc.strerror}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def listen_address(address: str) -> tuple[str, int, bool]:
    """HOST:PORT split, and whether the host is loopback (127.0.0.0/8, ::1, localhost).

    Anything else (0.0.0.0, a host name, ::ffff:127.0.0.1) counts as beyond loopback: there the API
    needs a token configured, and a token for every read but /health and /metrics.
    """
    import ipaddress

    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit():
        raise DaemonRefused(f"--api {address}: expected HOST:PORT")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return host, int(port), loopback


def loopback_only(address: str | None) -> bool:
    """Whether the API (if served at all) listens on loopback only, where reads go without a token."""
    return address is None or listen_address(address)[2]


def _server(*, plane: Plane) -> Any:
    import uvicorn

    from ..api import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the daemon owns the signals
            yield

    config = uvicorn.Config(create_app(plane=plane), log_config=None, access_log=False, lifespan="off",
                            log_level="warning")
    return Server(config)
