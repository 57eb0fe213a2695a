"""The .deb installed with dpkg on this machine; the installed agent enrols and backs up against a
live portal; then removed and purged: nothing left behind. The fixture purges the package whatever happens."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest

import backup_agent
from catalog.choices import BackupStatus, JobState, Plugin
from catalog.models import Backup, StorageTarget
from catalog.services import jobs
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.enrolment import enrol_command
from requests_app.models import ClientRequest
from tests.agent_dist.conftest import require

pytestmark = pytest.mark.e2e

LEFT_BEHIND = ("/etc/backup-agent", "/var/lib/backup-agent", "/usr/bin/backup-agent", "/usr/lib/backup-agent")


def dpkg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require("dpkg"), *args], capture_output=True, text=True, timeout=120)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def installed() -> bool:
    return "install ok installed" in dpkg("-s", "backup-agent").stdout


@pytest.fixture
def deb_package(dist):
    if os.geteuid() != 0:
        pytest.fail("installing the .deb needs root (the test machine runs the suite as root)")
    if installed() or any(os.path.lexists(path) for path in LEFT_BEHIND) or user_exists("backup-agent"):
        pytest.fail("backup-agent is already on this machine: this test installs and purges its own copy")
    try:
        yield dist["deb"]
    finally:
        dpkg("--purge", "backup-agent")


def test_dpkg_installs_the_agent_and_purge_removes_everything(
    deb_package, live_server, settings, owner, app, auto_policy, tmp_path
):
    settings.PORTAL_BASE_URL = live_server.url
    source, storage = tmp_path / "source", tmp_path / "storage"
    (source / "etc").mkdir(parents=True)
    (source / "etc" / "app.conf").write_text("answer = 42\n")
    storage.mkdir()
    StorageTarget.objects.filter(pk=auto_policy.storage_target_id).update(location=str(storage))
    done = dpkg("-i", str(deb_package))
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed()

    # What the package and its postinst put in place.
    assert Path("/usr/bin/backup-agent").resolve() == Path("/usr/lib/backup-agent/backup-agent.pyz")
    assert Path("/lib/systemd/system/backup-agent.service").is_file()
    for folder in ("/etc/backup-agent", "/var/lib/backup-agent"):
        info = os.stat(folder)
        assert info.st_mode & 0o777 == 0o700 and info.st_uid == 0, folder
    account = pwd.getpwnam("backup-agent")
    assert account.pw_uid < 1000 and account.pw_shell.endswith("nologin")  # a system user, no login
    version = subprocess.run(["/usr/bin/backup-agent", "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"backup-agent {backup_agent.__version__}"
    # The maintainer scripts are idempotent: configuring again changes nothing and succeeds.
    postinst = "/var/lib/dpkg/info/backup-agent.postinst"
    again = subprocess.run([postinst, "configure", backup_agent.__version__], capture_output=True)
    assert again.returncode == 0

    # The installed agent enrols against the live portal with the page's enrol command, as root.
    request = services.submit_client(
        actor=Actor.person(owner, Channel.WEB),
        application=app,
        hostname="deb01.example.com",
        name="deb-files",
        plugin=Plugin.FILES,
        options={"paths": [str(source)]},
        policy=auto_policy,
    )
    request, token = services.issue_enrolment(request.pk, actor=Actor.person(owner, Channel.WEB))
    enrolled = subprocess.run(
        ["sh", "-c", enrol_command(request, token)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    assert ClientRequest.objects.get(pk=request.pk).status == RequestStatus.PROVISIONED
    assert Path("/etc/backup-agent/config.json").stat().st_mode & 0o777 == 0o600
    status = subprocess.run(["/usr/bin/backup-agent", "status"], capture_output=True, text=True, timeout=60)
    assert "deb01.example.com" in status.stdout

    # ... and backs the client up: the packaged agent, its default config, the portal's job.
    client = ClientRequest.objects.get(pk=request.pk).client
    job = jobs.queue_backup(client)
    ran = subprocess.run(
        ["/usr/bin/backup-agent", "run", "--once"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    backup = Backup.objects.get(job=job)
    assert backup.status == BackupStatus.AVAILABLE and backup.size_bytes > 0

    # ... and restores it, into a new folder its allow-list lets it write (under the backed-up path).
    target = source / "restored"
    restore = jobs.queue_restore(backup, agent=client.agent, target_location=str(target), overwrite=False)
    ran = subprocess.run(
        ["/usr/bin/backup-agent", "run", "--once"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    restore.refresh_from_db()
    assert restore.state == JobState.SUCCEEDED, restore.error
    restored = [path for path in target.rglob("app.conf") if path.is_file()]
    assert [path.read_text() for path in restored] == ["answer = 42\n"]

    # remove keeps the config and the state (a reinstall picks them up) ...
    assert dpkg("--remove", "backup-agent").returncode == 0
    assert not os.path.lexists("/usr/bin/backup-agent")
    assert Path("/etc/backup-agent/config.json").exists() and user_exists("backup-agent")
    # ... purge leaves nothing behind.
    assert dpkg("--purge", "backup-agent").returncode == 0
    assert not any(os.path.lexists(path) for path in LEFT_BEHIND)
    assert not user_exists("backup-agent")
    with pytest.raises(KeyError):
        grp.getgrnam("backup-agent")
