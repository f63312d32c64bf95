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
        self._listener = bind_api(address=self.address, token=self.plane.token)
        self._server = _server(plane=self.plane)
        self.log.info("api listening", address=self.address, token_required=self.plane.token is not None)

    async def run(self, stop: asyncio.Event) -> None:
        await self._server.serve(sockets=[self._listener])

    async def close(self) -> None:
        self._server.should_exit = True


def bind_api(*, address: str, token: str | None) -> Any:
    """Bind the API's socket up front, so a taken port or a bad address fails the start clearly."""
    import socket

    host, port = _host_port(address=address, token=token)
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


def _host_port(*, address: str, token: str | None) -> tuple[str, int]:
    """HOST:PORT split; a non-loopback host is refused without a token."""
    import ipaddress

    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit():
        raise DaemonRefused(f"--api {address}: expected HOST:PORT")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and token is None:
        raise DaemonRefused(f"refusing to serve the API on {address} without --api-token-file "
                            "(only loopback addresses may go without a token)")
    return host, int(port)


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
