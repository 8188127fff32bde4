"""Webhook receivers on loopback for tests and benchmarks: a healthy one that records
what it is sent, and the hostile ones of issue 16 (a body of hundreds of megabytes, an
answer trickled a byte at a time)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Behaviour = Literal["healthy", "huge", "slow"]
HUGE_BYTES = 300 * 1024 * 1024


@dataclass
class Receiver:
    """What a receiver was sent: (arrival on the monotonic clock, headers, body) each."""

    behaviour: Behaviour = "healthy"
    trickle_seconds: float = 1.0  # "slow": one byte of the answer this often
    received: list[tuple[float, dict[str, str], str]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"])).decode()
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.received.append((time.monotonic(), headers, body))
            try:
                if receiver.behaviour == "huge":
                    self._huge()
                elif receiver.behaviour == "slow":
                    self._trickle()
                else:
                    self.send_response(204)
                    self.end_headers()
            except OSError:  # the sender hung up: what it is meant to do
                self.close_connection = True

        def _huge(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(HUGE_BYTES))
            self.end_headers()
            chunk = b"x" * (1024 * 1024)
            for _ in range(HUGE_BYTES // len(chunk)):
                self.wfile.write(chunk)

        def _trickle(self) -> None:
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n":
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(receiver.trickle_seconds)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serving(
    *receivers: Receiver, tls: ssl.SSLContext | None = None
) -> Iterator[tuple[Receiver, ...]]:
    """Each receiver listening on a free loopback port (set in `port`) until exit, over
    TLS with `tls` (a server-side context)."""
    servers = []
    try:
        for receiver in receivers:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
            server.daemon_threads = True
            if tls is not None:
                server.socket = tls.wrap_socket(server.socket, server_side=True)
            receiver.port = server.server_address[1]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        yield receivers
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
