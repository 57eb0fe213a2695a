"""Shared set-up of the end-to-end tests: an application, a storage folder, a client waiting for its agent."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from catalog.choices import ClientStatus, Plugin
from catalog.models import Application, Backup, BackupClient
from catalog.services import agents, jobs
from tests import factories

HOSTNAME = "e2e-agent.local"


@dataclass
class Scenario:
    application: Application
    client: BackupClient
    storage: Path
    source: Path
    token: str


def make_source_tree(root: Path) -> Path:
    (root / "docs" / "empty").mkdir(parents=True)
    (root / "docs" / "readme.txt").write_text("hello\n")
    (root / "data.bin").write_bytes(os.urandom(300_000))
    (root / "script.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "script.sh").chmod(0o750)
    (root / "link").symlink_to("docs/readme.txt")
    (root / os.fsdecode(b"caf\xe9-latin1.txt")).write_text("non-UTF-8 name\n")
    return root


def build(tmp_path: Path, *, plugin: str = Plugin.FILES, options: dict | None = None) -> Scenario:
    storage = tmp_path / "storage"
    storage.mkdir()
    source = make_source_tree(tmp_path / "source")
    application = factories.ApplicationFactory(slug="shop")
    target = factories.StorageTargetFactory(location=str(storage))
    policy = factories.ProtectionPolicyFactory(storage_target=target, schedule="0 3 * * *", max_retries=2)
    client = BackupClient.objects.create(
        application=application,
        name="files",
        hostname=HOSTNAME,
        plugin=plugin,
        options=options or {"paths": [str(source)]},
        policy=policy,
        status=ClientStatus.PENDING_ENROLMENT,
    )
    _, token = agents.issue_enrolment_token(application=application, hostname=HOSTNAME)
    return Scenario(application, client, storage, source, token)


def stored_data_file(storage: Path, backup: Backup) -> Path:
    folder = storage / backup.location
    data = [p for p in folder.iterdir() if p.name.startswith("data")]
    assert len(data) == 1, list(folder.iterdir())
    return data[0]


def flip_middle_byte(path: Path) -> None:
    """Damage a stored file the way bit rot would: one byte in the middle, inverted."""
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree(root: Path) -> dict[str, tuple]:
    """Everything that must survive a backup and restore: contents, modes, link targets."""
    result = {}
    for path in sorted(root.rglob("*")):
        rel = os.fsencode(path.relative_to(root))
        if path.is_symlink():
            result[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            result[rel] = ("dir", path.stat().st_mode & 0o7777)
        else:
            result[rel] = ("file", path.stat().st_mode & 0o7777, path.read_bytes())
    return result


PG = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]


def psql(sql: str, database: str = "postgres") -> str:
    result = subprocess.run([*PG, "-d", database, "-c", sql], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is needed for this test: {result.stderr.strip()}")
    return result.stdout


def backed_up(agent_cli, tmp_path: Path, **kwargs) -> tuple[Scenario, Backup]:
    """A scenario whose agent has enrolled and taken one backup (``build``'s keywords)."""
    setup = build(tmp_path, **kwargs)
    agent_cli.enrol(setup.token, HOSTNAME)
    setup.client.refresh_from_db()
    job = jobs.queue_backup(setup.client)
    result = agent_cli.run_once()
    assert result.returncode == 0, result.stderr[-3000:]
    return setup, Backup.objects.get(job=job)
