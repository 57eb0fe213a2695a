"""A real HTTP receiver on 127.0.0.1 that records what it is sent, and the secret subscriptions to it share.

A plain module, not a conftest: test modules import from here; the fixtures are in conftest.py.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "whsec_test-secret-of-the-receiver"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def delivery_id(self) -> str:
        return self.headers["X-Portal-Delivery"]


class Receiver:
    """Answers each POST with the next planned status (200 once the plan is used up) and records it."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.plan: deque[int] = deque()
        self.delay = 0.0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hooks/portal"

    def fail_first(self, n: int, status: int = 500) -> None:
        self.plan.extend([status] * n)

    def always(self, status: int) -> None:
        self.plan.extend([status] * 10_000)

    def _next_status(self) -> int:
        with self._lock:
            return self.plan.popleft() if self.plan else 200

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver._next_status()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://elsewhere.invalid/steal")
                answer = b"ok" if status < 300 else b"receiver says no"
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format, *args):  # quiet test output
                pass

        return Handler

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
