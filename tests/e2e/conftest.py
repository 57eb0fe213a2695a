"""End-to-end harness: the live server, a real worker process and the real agent CLI.

Every process works on the test database: the live server runs in this
process, the worker and the agent are subprocesses pointed at it by URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the database this test runs on (Django's test database)."""
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return (
            f"sqlite:///{settings['NAME']}"
            if settings["NAME"].startswith("/")
            else "sqlite:///" + str(REPO / settings["NAME"])
        )
    user = settings.get("USER") or ""
    auth = f"{user}@" if user else ""
    return f"postgres://{auth}{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{settings['NAME']}"


def portal_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DEBUG="true",
        DATABASE_URL=database_url(),
        PORTAL_VAR_DIR=str(tmp_path / "portal-var"),
        Q_WORKERS="1",
        **extra,
    )
    return env


def require_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {url} ({exc}); the Celery end-to-end test needs it.")


@pytest.fixture
def worker(request, tmp_path, settings) -> Iterator[str]:
    """A real worker process of the backend named by the test's parameter."""
    backend = request.param
    settings.PORTAL_TASK_BACKEND = backend
    extra: dict[str, str] = {"PORTAL_TASK_BACKEND": backend}
    if backend == "celery":
        from portal.celery import app

        broker, queue = "redis://127.0.0.1:6379/0", f"e2e-{uuid.uuid4().hex[:12]}"
        require_redis(broker)
        app.conf.broker_url, app.conf.task_default_queue = broker, queue
        extra.update(CELERY_BROKER_URL=broker, CELERY_TASK_DEFAULT_QUEUE=queue)
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal.celery",
            "worker",
            "--pool",
            "solo",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            queue,
            "--loglevel",
            "INFO",
        ]
    else:
        argv = [sys.executable, "manage.py", "qcluster"]
    log = (tmp_path / f"worker-{backend}.log").open("w")
    process = subprocess.Popen(argv, cwd=REPO, env=portal_env(tmp_path, **extra), stdout=log, stderr=log)
    try:
        yield backend
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        # Captured by pytest and shown only when the test fails.
        print((tmp_path / f"worker-{backend}.log").read_text()[-5000:])


def scenario_allow_flags(tmp_path: Path) -> list[str]:
    """The allow-list an admin would give the e2e server: what tests/e2e/scenario.py sets up, no more.

    Its source tree (backups, and in-place restores into "/" under it), the two
    restore targets the tests use, its storage, the Python the command-plugin
    scenarios run, and the PostgreSQL databases the restore-test scenario creates.
    """
    return [
        *("--allow-path", str(tmp_path / "source")),
        *("--restore-root", str(tmp_path / "restored")),
        *("--restore-root", str(tmp_path / "restore-target")),
        *("--allow-storage", str(tmp_path / "storage")),
        *("--allow-command", sys.executable),
        *("--allow-database", "postgresql:e2e_rt_*@127.0.0.1"),  # the host the scenarios' options name
    ]


class AgentCLI:
    """Runs the real ``backup-agent`` program as a subprocess."""

    def __init__(self, tmp_path: Path, server: str) -> None:
        self.tmp_path = tmp_path
        self.config = tmp_path / "agent" / "config.json"
        self.spool = tmp_path / "agent" / "spool"
        self.server = server
        self.log = tmp_path / "agent.log"
        self.scratch = tmp_path / "agent" / "scratch"
        self.scratch.mkdir(parents=True)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "backup_agent", *args]

    def enrol(self, token: str, hostname: str, allow: Sequence[str] | None = None) -> None:
        """Enrol with the `enrol` allow-list flags `allow` (default: scenario_allow_flags)."""
        allow = scenario_allow_flags(self.tmp_path) if allow is None else allow
        result = subprocess.run(
            self.argv(
                "enrol",
                "--server",
                self.server,
                "--token",
                token,
                "--hostname",
                hostname,
                "--config",
                str(self.config),
                "--spool-dir",
                str(self.spool),
                *allow,
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        # Report progress often, so tests see it (and the lease) move within a second.
        data = json.loads(self.config.read_text())
        data["progress_interval"] = 0.2
        data["scratch_dir"] = str(self.scratch)
        self.config.write_text(json.dumps(data))

    def run_once(self, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self.argv("-v", "run", "--once", "--config", str(self.config)),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        with self.log.open("a") as log:
            log.write(result.stdout + result.stderr)
        return result

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv("-v", "run", "--once", "--config", str(self.config)),
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("a"),
        )


@pytest.fixture
def agent_cli(tmp_path, live_server) -> AgentCLI:
    return AgentCLI(tmp_path, live_server.url)
