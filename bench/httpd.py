"""`python -m bench.httpd N`: N minimal HTTP/1.1 keep-alive servers on 127.0.0.1, in this one process.

Every request, whatever its path, gets `200 ok`; pipelined requests are answered in order. It is the
fastest thing that speaks enough HTTP for aiohttp, so a health-check pass against it measures the
checker, not the servers. Prints the ports as one JSON line once listening, then serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
END = b"\r\n\r\n"


class Responder(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        requests = self.buffer.count(END)  # GETs carry no body: one blank line ends one request
        if requests:
            self.buffer = self.buffer[self.buffer.rfind(END) + len(END):]
            self.transport.write(RESPONSE * requests)


async def main(count: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(Responder, "127.0.0.1", 0, backlog=1024) for _ in range(count)]
    print(json.dumps([server.sockets[0].getsockname()[1] for server in servers]), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1))
