"""The fault tests' harness: the real `backup-agent` CLI as a subprocess, a tmpfs, waiting.

A plain module (tests/e2e keeps its helpers in its conftest, which is not imported
from here): the minimum of tests/e2e/conftest.py, plus instances of one agent
(a copied config with its own state folder) and a mounted tmpfs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from django.utils import timezone

from backup_agent.config import Config
from catalog.choices import ClientStatus, JobState
from catalog.models import BackupClient, Job
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]

# Config keys (if the agent has any) that say where the instance's state lives.
STATE_KEYS = [f.name for f in dataclasses.fields(Config) if "state" in f.name or "instance" in f.name]


def allow_flags(tmp_path: Path) -> list[str]:
    """The allow-list of tests/e2e (scenario_allow_flags): the scenario's tree, targets, storage."""
    return [
        *("--allow-path", str(tmp_path / "source")),
        *("--restore-root", str(tmp_path / "restored")),
        *("--restore-root", str(tmp_path / "restore-target")),
        *("--allow-storage", str(tmp_path / "storage")),
        *("--allow-command", sys.executable),
    ]


def add_client(first: BackupClient, name: str, *, plugin: str, options: dict) -> BackupClient:
    """Another client of the same application on the same (enrolled) agent."""
    first.refresh_from_db()
    return BackupClient.objects.create(
        application=first.application,
        agent=first.agent,
        name=name,
        hostname=first.hostname,
        plugin=plugin,
        options=options,
        policy=first.policy,
        status=ClientStatus.ACTIVE,
    )


def leftovers(root: Path, prefixes: Sequence[str] = (".partial-", ".restore-")) -> list[str]:
    """Staging anywhere under `root` (a sweep must leave none)."""
    if not root.exists():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.name.startswith(tuple(prefixes)))


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` on `path` (tests run as root); skip only where mounting is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class Agent:
    """One instance of the real agent: its own config file, spool and state folder under `home`."""

    def __init__(self, home: Path, server: str, *, host: str | None = None) -> None:
        self.home = home
        self.server = server
        self.host = host  # run in a UTS namespace with this host name (a "second machine")
        self.config = home / "config.json"
        self.spool = home / "spool"
        self.log = home / "agent.log"
        self.scratch = home / "scratch"
        self.scratch.mkdir(parents=True, exist_ok=True)

    def argv(self, *args: str) -> list[str]:
        argv = [sys.executable, "-m", "backup_agent", *args]
        if self.host:
            argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.host, *argv]
        return argv

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}

    def enrol(self, token: str, hostname: str, allow: Sequence[str]) -> None:
        result = subprocess.run(
            self.argv(
                "enrol",
                *("--server", self.server, "--token", token, "--hostname", hostname),
                *("--config", str(self.config), "--spool-dir", str(self.spool)),
                *allow,
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=REPO,
            env=self.env(),
        )
        assert result.returncode == 0, result.stderr
        # The instance's state (its id) lives in the spool folder's parent by default: `home`.
        self.edit(progress_interval=0.2, scratch_dir=str(self.scratch))

    def _own_state(self) -> dict[str, str]:
        return {key: str(self.home / "state") for key in STATE_KEYS}

    def edit(self, **values: object) -> None:
        data = json.loads(self.config.read_text())
        data.update(values)
        self.config.write_text(json.dumps(data))

    def clone(self, home: Path, *, server: str | None = None, host: str | None = None) -> Agent:
        """A second instance from a copy of this config file (as if copied to another machine)."""
        if host:
            probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True, check=False)
            if probe.returncode != 0:
                pytest.skip(f"cannot give the copy its own host name (unshare --uts): {probe.stderr.strip()}")
        other = Agent(home, server or self.server, host=host)
        shutil.copy2(self.config, other.config)
        other.edit(
            server=other.server,
            spool_dir=str(other.spool),
            scratch_dir=str(other.scratch),
            **other._own_state(),
        )
        return other

    def run_once(self, timeout: float = 90) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self.argv("-v", "run", "--once", "--config", str(self.config)),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
            env=self.env(),
        )
        with self.log.open("a") as log:
            log.write(result.stdout + result.stderr)
        return result

    def start(self, *, once: bool = False) -> subprocess.Popen:
        args = ["-v", "run", *(["--once"] if once else []), "--config", str(self.config)]
        with self.log.open("a") as log:
            return subprocess.Popen(
                self.argv(*args), stdout=subprocess.DEVNULL, stderr=log, cwd=REPO, env=self.env()
            )

    @staticmethod
    def stop(process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def spooled(self) -> list[Path]:
        return sorted(self.spool.glob("*.json")) if self.spool.is_dir() else []


def outage_past_the_lease(job, proxy) -> None:
    """Once the backup has reported progress, the portal becomes unreachable until its lease runs out."""
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, state=JobState.RUNNING, bytes_done__gt=0).exists(),
        what="the backup to report progress",
    )
    proxy.refuse()
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, lease_expires_at__lt=timezone.now()).exists(),
        timeout=10,
        what="the lease to run out",
    )
