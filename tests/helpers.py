"""Helpers the test folders share that are neither fixtures nor data builders."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection
from rest_framework.test import APIClient

from requests_app.models import ApiKey


def key_client(user, name: str = "ServiceNow") -> APIClient:
    """A client that authenticates as an integration acting for ``user``; ``.api_key`` is the row."""
    api_key, key = ApiKey.issue(user=user, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    client.api_key = api_key
    client.key = key
    return client


def agent_client(agent) -> tuple[APIClient, str]:
    """A client that speaks for ``agent`` with a fresh token (the token returned too)."""
    token = agent.issue_token()
    agent.save()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api, token


def wait_for(
    predicate: Callable[[], object], *, timeout: float = 30, what: str = "condition", interval: float = 0.1
) -> object:
    """Poll ``predicate`` until it is true (and return its value); fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """End a server a test started: SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_at_once(work: list[Callable[[], object]]) -> list[object]:
    """Run each callable in its own thread, released together; their results, or the exceptions raised.

    Each thread has its own database connection (closed when it is done), as two
    requests or two workers would: for the concurrency tests, on PostgreSQL above all.
    """
    barrier = threading.Barrier(len(work))
    results: list[object] = []
    lock = threading.Lock()

    def run(task) -> None:
        try:
            barrier.wait()
            result = task()
        except BaseException as exc:  # surfaced by the caller: a thread must not fail silently
            result = exc
        finally:
            connection.close()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(task,)) for task in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == len(work), "a thread hung"
    return results


#: Every factory-made user's password (tests/factories.py).
PASSWORD = "correct horse battery staple"


def log_in(page, base_url: str, username: str, path: str = "/accounts/login/") -> None:
    """Sign in through the real form in a Playwright ``page``."""
    page.goto(base_url + path)
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_load_state("networkidle")
