"""A small real HTTP server speaking the portal side of docs/agent-protocol.md.

Enough of the protocol to drive the agent end to end: enrol, poll (hands out
queued jobs once), progress (with a cancel switch) and complete (with switches
for 500, 409 and a dropped connection). It records every request it gets
(`polls()`: the poll bodies, with the `archives` an agent reports) and can
ask the agent to remove archives (`remove_archives`, sent with the next poll answer).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/api/agent/v1/"


@dataclass
class FakePortal:
    enrolment_tokens: set[str] = field(default_factory=lambda: {"enrol-me"})
    agent_token: str = "agent-token-0123456789"
    poll_after: int = 1
    queued: list[dict[str, Any]] = field(default_factory=list)
    cancel: set[int] = field(default_factory=set)
    # Answers for `complete`, used up one per call; empty means 200.
    complete_answers: list[str] = field(default_factory=list)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Down: every request is dropped unanswered (an outage, to the agent).
    down: bool = False
    # Cloned: polls are answered 409 agent_cloned (a copied config on another host).
    cloned: bool = False
    # Sent once, as the next poll answer's `remove_archives` (None: no such key).
    remove_archives: list[Any] | None = None
    # The progress answers' `report_after` (None: not said, as an older portal).
    report_after: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                portal.handle(self, self.path, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakePortal:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what the tests look at -----------------------------------------------------

    def calls(self, endpoint: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for path, body in self.requests if path.endswith(endpoint)]

    def polls(self) -> list[dict[str, Any]]:
        """Every poll body received, oldest first."""
        return self.calls("poll")

    def completes(self, job_id: int) -> list[dict[str, Any]]:
        return self.calls(f"jobs/{job_id}/complete")

    # --- the protocol ----------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler, path: str, body: dict[str, Any]) -> None:
        if self.down:
            return _drop(handler)
        with self.lock:
            self.requests.append((path, body))
        endpoint = path.removeprefix(PREFIX)
        if endpoint == "enrol":
            return self._enrol(handler, body)
        if handler.headers.get("Authorization") != f"Bearer {self.agent_token}":
            return _answer(handler, 401, {"code": "unauthorized", "detail": "bad token"})
        if endpoint == "poll" and self.cloned:
            detail = "this agent's token is in use on another host"
            return _answer(handler, 409, {"code": "agent_cloned", "detail": detail})
        if endpoint == "poll":
            with self.lock:
                jobs, self.queued = self.queued, []
                remove, self.remove_archives = self.remove_archives, None
            answer: dict[str, Any] = {"jobs": jobs, "poll_after": self.poll_after}
            if remove is not None:
                answer["remove_archives"] = remove
            return _answer(handler, 200, answer)
        parts = endpoint.split("/")
        if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "progress":
            cancel = int(parts[1]) in self.cancel
            answer = {"lease_expires_at": "2030-01-01T00:00:00Z", "cancel": cancel}
            if self.report_after is not None:
                answer["report_after"] = self.report_after
            return _answer(handler, 200, answer)
        if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "complete":
            return self._complete(handler, int(parts[1]))
        return _answer(handler, 404, {"code": "not_found", "detail": path})

    def _enrol(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        with self.lock:
            if body.get("token") not in self.enrolment_tokens:
                return _answer(handler, 400, {"code": "invalid_token", "detail": "unknown or used token"})
            self.enrolment_tokens.discard(body["token"])
        answer = {
            "agent_id": 7,
            "hostname": body["hostname"],
            "agent_token": self.agent_token,
            "poll_after": 30,
        }
        _answer(handler, 201, answer)

    def _complete(self, handler: BaseHTTPRequestHandler, job_id: int) -> None:
        with self.lock:
            mode = self.complete_answers.pop(0) if self.complete_answers else "ok"
        if mode == "500":
            return _answer(handler, 500, {"code": "server_error", "detail": "try again"})
        if mode == "409":
            return _answer(handler, 409, {"code": "lease_lost", "detail": "job moved on"})
        if mode == "drop":
            return _drop(handler)
        return _answer(handler, 200, {"acknowledged": True, "job": job_id})


def _drop(handler: BaseHTTPRequestHandler) -> None:
    """Close without answering: to the agent this is an unreachable portal."""
    handler.close_connection = True
    handler.connection.shutdown(2)


def _answer(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)
