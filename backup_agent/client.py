"""HTTP client for the portal's agent API (/api/agent/v1/), on urllib only.

Every call is one JSON request, except the upload of a backup's index (a
file body, streamed). The client itself never sleeps between
retries except in `complete`, where a short in-line retry saves a whole poll
interval; the run loop owns the long exponential backoff.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from backup_agent import PROTOCOL_VERSION, __version__
from backup_agent.errors import PortalError, PortalUnreachable

log = logging.getLogger(__name__)

API_PREFIX = "/api/agent/v1/"
# 409 code of a poll (or report) from a copy of this agent's config on another host.
AGENT_CLONED = "agent_cloned"
# 426 code of every call from an agent older than the oldest protocol the portal speaks.
AGENT_UNSUPPORTED = "agent_unsupported"
NOT_IMPLEMENTED = 501


class PortalClient:
    """Speaks the agent protocol with one portal, as one agent."""

    # First pause of complete()'s in-line retry; doubled for each further try.
    RETRY_DELAY = 1.0

    def __init__(
        self,
        server: str,
        agent_token: str | None = None,
        *,
        timeout: float = 30.0,
        ca_file: str | None = None,
    ) -> None:
        if not server.startswith(("https://", "http://")):
            # urllib would also open file:// and ftp:// URLs; the portal is HTTP(S) only.
            raise ValueError(f"portal URL must be http(s): {server!r}")
        self.server = server.rstrip("/")
        self.base = self.server + API_PREFIX
        self._token = agent_token
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file else None
        host = urlsplit(server).hostname or ""
        if server.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
            log.warning("portal URL %s is plain HTTP: the agent token travels unencrypted", server)

    def enrol(
        self, token: str, hostname: str, plugins: list[str], instance: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """`instance`: {"id": <32 hex from the state folder>, "host": <FQDN>} (backup_agent/state.py)."""
        body: dict[str, Any] = {
            "token": token,
            "hostname": hostname,
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "plugins": plugins,
        }
        if instance is not None:
            body["instance"] = instance
        return self._call("enrol", body, authenticated=False)

    def poll(
        self,
        plugins: list[str],
        running: list[int],
        allow: dict[str, list[str]],
        instance: dict[str, str] | None = None,
        archives: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Heartbeat and claim; `allow` is this server's allow-list, for the portal to show.

        `archives` (the archives this agent wrote that still exist) is sent only
        when given: an absent key means "no report in this poll", [] means "none".
        """
        body: dict[str, Any] = {
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "plugins": plugins,
            "running": running,
            "allow": allow,
        }
        if instance is not None:
            body["instance"] = instance
        if archives is not None:
            body["archives"] = archives
        return self._call("poll", body)

    def progress(self, job_id: int, bytes_done: int, bytes_total: int | None) -> dict[str, Any]:
        body = {"bytes_done": bytes_done, "bytes_total": bytes_total}
        return self._call(f"jobs/{int(job_id)}/progress", body)

    def complete(self, job_id: int, report: dict[str, Any], *, tries: int = 3) -> bool:
        """Send a job's report. True once the portal has it (200) or never will (409).

        409 lease_lost means another attempt owns the job now; keeping the
        report would only resend it forever, so it counts as acknowledged.
        Raises PortalError/PortalUnreachable when the report must stay spooled.
        """
        try:
            self._retrying(lambda: self._call(f"jobs/{int(job_id)}/complete", report), tries)
        except PortalError as exc:
            if exc.status == 409 and exc.code != AGENT_CLONED:
                log.warning("job %s: report refused, lease lost (%s)", job_id, exc.detail)
                return True
            raise  # agent_cloned among them: keep it spooled
        return True

    def upload_index(self, job_id: int, path: str | os.PathLike[str], sha256: str, *, tries: int = 3) -> None:
        """PUT a backup's index file (streamed from disk, never read whole) before its report.

        Returns once the portal has it (2xx). Raises PortalError for any other
        answer (the caller decides: docs/agent-protocol.md), PortalUnreachable
        when it must be tried again later, OSError when the file cannot be read.
        5xx (but 501) and unreachable are retried in line, like complete().
        """

        def send() -> None:
            with open(path, "rb") as fh:
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(os.fstat(fh.fileno()).st_size),
                    "X-Index-SHA256": sha256,
                }
                self._request("PUT", f"jobs/{int(job_id)}/index", fh, headers)

        self._retrying(send, tries)

    def download(self, path: str, limit: int) -> bytes:
        """GET ``path`` of the portal (e.g. /agent/backup-agent.pyz), unauthenticated, with the
        client's TLS settings; at most ``limit`` bytes. PortalError / PortalUnreachable as the calls."""
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.server + path, headers={"User-Agent": f"backup-agent/{__version__}"}, method="GET"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl) as resp:  # noqa: S310
                data = resp.read(limit + 1)
        except urllib.error.HTTPError as exc:
            raise PortalError(exc.code, "http_error", f"GET {path}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise PortalUnreachable(f"{self.server}{path}: {getattr(exc, 'reason', exc)}") from None
        if len(data) > limit:
            raise PortalError(502, "too_large", f"GET {path}: more than {limit} bytes")
        return data

    def _retrying(self, send: Callable[[], object], tries: int) -> None:
        """Call ``send`` up to ``tries`` times, backing off, while the portal is down or answers 5xx.

        Any other answer is final and raised at once; so is 501, a server that
        does not implement the call (asking again changes nothing).
        """
        delay = self.RETRY_DELAY
        for attempt in range(1, tries + 1):
            try:
                send()
                return
            except PortalError as exc:
                if exc.status < 500 or exc.status == NOT_IMPLEMENTED or attempt == tries:
                    raise
            except PortalUnreachable:
                if attempt == tries:
                    raise
            time.sleep(delay)
            delay *= 2

    def _call(self, path: str, body: dict[str, Any], *, authenticated: bool = True) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        return self._request(
            "POST", path, data, {"Content-Type": "application/json"}, authenticated=authenticated
        )

    def _request(
        self,
        method: str,
        path: str,
        data: bytes | BinaryIO,
        extra_headers: dict[str, str],
        *,
        authenticated: bool = True,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "User-Agent": f"backup-agent/{__version__}", **extra_headers}
        if authenticated:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.base + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl) as resp:  # noqa: S310
                return _decode(resp.read())
        except urllib.error.HTTPError as exc:
            payload = _decode(exc.read(), strict=False)
            raise PortalError(
                exc.code, str(payload.get("code", "http_error")), str(payload.get("detail", exc.reason))
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            # URLError, refused/reset connections, TLS errors and timeouts all
            # mean the same thing to the caller: try again later.
            reason = getattr(exc, "reason", exc)
            raise PortalUnreachable(f"{self.base}{path}: {reason}") from None


def _decode(raw: bytes, *, strict: bool = True) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except json.JSONDecodeError:
        if strict:
            raise PortalError(502, "bad_response", "the portal did not answer JSON") from None
        return {}
    return data if isinstance(data, dict) else {}
