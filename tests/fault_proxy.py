"""An HTTP proxy in front of a real server that makes a share of its answers fail.

For servers that cannot be told to fail (a real ``trytond``): requests whose body matches
``matches`` fail at ``rate``, seeded, half of them *before* the server sees them (503, nothing
done) and half *after* it answered (the work is done, the answer is replaced by a 503 — the
ambiguous case a lost answer makes). ``faults`` counts both kinds.
"""

from __future__ import annotations

import http.client
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        rate: float,
        matches: Callable[[bytes], bool] = lambda body: True,
        seed: int = 5,
    ) -> None:
        parts = urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.rate = rate
        self.matches = matches
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.faults = {"before": 0, "after": 0}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def _fault(self, body: bytes) -> str | None:
        if not self.matches(body):
            return None
        with self.lock:
            if self.random.random() >= self.rate:
                return None
            kind = self.random.choice(("before", "after"))
            self.faults[kind] += 1
            return kind

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault(body)
                if fault == "before":
                    self._send(503, b"fault injected before the server saw it", {})
                    return
                upstream = http.client.HTTPConnection(proxy.host, proxy.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    upstream.request("POST", self.path, body, headers)
                    response = upstream.getresponse()
                    data = response.read()
                    kept = {
                        k: v
                        for k, v in response.getheaders()
                        if k.lower() not in HOP_BY_HOP | {"content-length"}
                    }
                finally:
                    upstream.close()
                if fault == "after":
                    self._send(503, b"fault injected after the server answered", {})
                    return
                self._send(response.status, data, kept)

            def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed
                    self.close_connection = True

        return Handler

    @contextmanager
    def running(self) -> Iterator[FaultProxy]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(10)
