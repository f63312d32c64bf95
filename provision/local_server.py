"""The `local` target's resource: one real HTTP server per resource on 127.0.0.1.

It exists so the demo, the tests and the drift loop have real URLs to provision, check and tear
down without any cloud. It is started detached by provision.sh and knows only what the contract
gave it: RESOURCE_ID and DEPLOY_REF from the environment, the state directory from argv.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        body = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the drift loop checks every resource often; a line per check would fill the disk


def write_atomically(path: Path, text: str) -> None:
    """provision.sh polls for these files; it must never read a half-written one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)


def main() -> None:
    state = Path(sys.argv[1])
    try:
        os.setsid()  # out of the script's process group even if `setsid` was unavailable
    except OSError:
        pass  # already a session leader
    # SystemExit unwinds serve_forever in the main thread, so the socket is closed cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    info = {"resource_id": os.environ.get("RESOURCE_ID", ""), "deploy_ref": os.environ.get("DEPLOY_REF", "")}
    server.body = (json.dumps(info) + "\n").encode()  # type: ignore[attr-defined]
    write_atomically(state / "server.pid", f"{os.getpid()}\n")
    write_atomically(state / "server.port", f"{server.server_address[1]}\n")
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
