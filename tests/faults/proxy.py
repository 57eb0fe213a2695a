"""A dropping TCP proxy between the agent and the live server (standard library only).

One HTTP request per connection (the agent's urllib client sends
``Connection: close``; the proxy forces it too). Modes:

- ``pass``: forward the request, return the response;
- ``refuse``: the listening socket is closed, so new connections are refused
  (ECONNREFUSED) until ``pass_()`` opens it again on the same port;
- ``swallow``: forward the request, read the server's whole response (so the
  portal has done its work), then drop it and reset the connection: the agent
  sees a reset, as if the answer had been lost on the way.

A ``rewrite(path, data) -> data`` hook may change JSON request bodies on the
way (e.g. an agent's clock). Every exchange is recorded in ``exchanges``.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

Rewrite = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Exchange:
    path: str
    request: bytes
    status: int
    response: bytes
    swallowed: bool


class DroppingProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self.host_name = parts.hostname or "127.0.0.1"
        self.upstream = (self.host_name, parts.port or 80)
        self.rewrite: Rewrite | None = None
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._swallow: tuple[int | None, str] | None = None  # (how many, path suffix)
        self.port = 0
        self.mode = "refuse"

    @property
    def url(self) -> str:
        # The upstream's host name (the live server allows it as Host), this proxy's port.
        return f"http://{self.host_name}:{self.port}"

    # --- switching ----------------------------------------------------------------

    def pass_(self) -> None:
        """Forward everything (and accept connections again after refuse())."""
        with self._lock:
            self._swallow = None
            self.mode = "pass"
            if self._listener is None:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", self.port))
                listener.listen(64)
                listener.settimeout(0.1)
                self.port = listener.getsockname()[1]
                self._listener = listener
                threading.Thread(target=self._serve, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        """Close the listening socket: every new connection is refused."""
        with self._lock:
            self.mode = "refuse"
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def swallow(self, count: int | None = None, path_suffix: str = "") -> None:
        """Drop the responses of the next `count` requests (all when None) whose path ends so."""
        self.pass_()
        with self._lock:
            self.mode = "swallow"
            self._swallow = (count, path_suffix)

    def stop(self) -> None:
        self.refuse()

    def swallowed(self, path_suffix: str = "") -> list[Exchange]:
        return [e for e in list(self.exchanges) if e.swallowed and e.path.endswith(path_suffix)]

    # --- serving ------------------------------------------------------------------

    def _serve(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _take_swallow(self, path: str) -> bool:
        with self._lock:
            if self._swallow is None:
                return False
            count, suffix = self._swallow
            if not path.endswith(suffix):
                return False
            if count is not None:
                count -= 1
                self._swallow = (count, suffix) if count > 0 else None
                if count <= 0:
                    self.mode = "pass"
            return True

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                request = _read_message(conn, request=True)
            except OSError:
                return
            if request is None:
                return
            head, body = request
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1].decode("latin-1")
            headers = [
                line
                for line in lines[1:]
                if not line.lower().startswith((b"content-length:", b"connection:"))
            ]
            if self.rewrite is not None and body:
                try:
                    data = json.loads(body)
                except ValueError:
                    pass
                else:
                    body = json.dumps(self.rewrite(path, data)).encode()
            headers += [b"Content-Length: %d" % len(body), b"Connection: close"]
            outgoing = b"\r\n".join([lines[0], *headers]) + b"\r\n\r\n" + body
            try:
                with socket.create_connection(self.upstream, timeout=60) as upstream:
                    upstream.sendall(outgoing)
                    response = _read_message(upstream, request=False)
            except OSError:
                return
            if response is None:
                return
            rhead, rbody = response
            status = int(rhead.split(b" ", 2)[1])
            swallowed = self._take_swallow(path)
            self.exchanges.append(Exchange(path, body, status, rbody, swallowed))
            if swallowed:
                # Close with RST: the agent sees "connection reset", never the answer.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            try:
                conn.sendall(rhead + b"\r\n\r\n" + rbody)
            except OSError:
                return


def _read_message(sock: socket.socket, *, request: bool) -> tuple[bytes, bytes] | None:
    """One HTTP message: head (without the blank line) and body (by Content-Length, else to EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None and request:
        length = 0
    while length is None or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body if length is None else body[:length]
