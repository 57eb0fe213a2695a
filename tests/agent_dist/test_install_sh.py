"""install.sh end to end: fetched from a live portal with curl, run with dash, into a temporary root.

BACKUP_AGENT_PREFIX keeps the installation (and the enrolment's config and state) under a
temporary folder and BACKUP_AGENT_NO_SYSTEMD=1 keeps systemctl out of it. Every failure must
exit non-zero with a clear message and leave that root exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from catalog.choices import Plugin
from catalog.models import Agent, EnrolmentToken
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel, RequestStatus
from requests_app.enrolment import install_command
from requests_app.models import ClientRequest
from tests.agent_dist.conftest import require

pytestmark = pytest.mark.e2e

SYSTEM_PATH = "/usr/bin:/bin"  # Debian's python3 (3.11), dash, curl, sha256sum: nothing of the venv


@pytest.fixture
def portal(live_server, settings):
    settings.PORTAL_BASE_URL = live_server.url
    return live_server.url


@pytest.fixture
def root(tmp_path) -> Path:
    """The host's root for the installer, with something already on it that must survive."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("new01\n")
    (root / "usr" / "local" / "bin").mkdir(parents=True)
    return root


@pytest.fixture
def enrolment(owner, app, auto_policy, portal):
    """An approved client request and its fresh one-time token."""
    request = services.submit_client(
        actor=Actor.person(owner, Channel.WEB),
        application=app,
        hostname="new01.example.com",
        name="new-files",
        plugin=Plugin.FILES,
        options={"paths": ["/srv/new"]},
        policy=auto_policy,
    )
    request, token = services.issue_enrolment(request.pk, actor=Actor.person(owner, Channel.WEB))
    return request, token


def snapshot(root: Path) -> dict[str, str]:
    seen = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            seen[key] = "-> " + os.readlink(path)
        elif path.is_file():
            seen[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            seen[key] = "dir"
    return seen


def run(command: str, root: Path, *, path: str = SYSTEM_PATH, **env: str) -> subprocess.CompletedProcess:
    environment = {
        "PATH": path,
        "HOME": str(root.parent),
        "LANG": "C.UTF-8",
        "BACKUP_AGENT_PREFIX": str(root),
        "BACKUP_AGENT_NO_SYSTEMD": "1",
        **env,
    }
    return subprocess.run(
        [require("dash"), "-c", command], env=environment, capture_output=True, text=True, timeout=120
    )


def as_root(command: str) -> str:
    """The page's command without `sudo` (the tests run as root; `sudo` need not be installed)."""
    assert " | sudo sh -s -- " in command
    return command.replace(" | sudo sh -s -- ", " | sh -s -- ")


def saved_script(portal: str, tmp_path: Path, **changes: str) -> Path:
    """install.sh as served, with some of its variables changed (a tampered or misdirected copy)."""
    text = subprocess.run(
        ["curl", "-fsSL", f"{portal}/agent/install.sh"], capture_output=True, text=True, check=True
    ).stdout
    for name, value in changes.items():
        text, count = re.subn(rf"^(\s*){name}=.*$", rf"\g<1>{name}={value}", text, flags=re.MULTILINE)
        assert count == 1, name
    script = tmp_path / "install.sh"
    script.write_text(text)
    return script


def args_of(command: str) -> str:
    return command.split(" | sudo sh -s -- ", 1)[1]


def test_the_one_paste_installs_enrols_and_the_host_appears(portal, root, enrolment):
    request, token = enrolment
    command = install_command(request, token)
    assert command.startswith(f"curl -fsSL {portal}/agent/install.sh | sudo sh -s -- --token {token} ")

    done = run(as_root(command), root)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "checksum verified" in done.stdout and "systemd not in use here" in done.stdout
    agent = Agent.objects.get(hostname="new01.example.com")
    request = ClientRequest.objects.get(pk=request.pk)
    assert request.status == RequestStatus.PROVISIONED and request.client.agent_id == agent.pk
    pyz = root / "usr/local/lib/backup-agent/backup-agent.pyz"
    served = subprocess.run(["curl", "-fsSL", f"{portal}/agent/backup-agent.pyz.sha256"], capture_output=True)
    assert served.stdout.decode().split()[0] == hashlib.sha256(pyz.read_bytes()).hexdigest()
    assert os.readlink(root / "usr/local/bin/backup-agent") == "../lib/backup-agent/backup-agent.pyz"
    version = subprocess.run(
        [str(root / "usr/local/bin/backup-agent"), "--version"],
        capture_output=True,
        text=True,
        env={"PATH": SYSTEM_PATH},
    )
    assert version.returncode == 0 and version.stdout.startswith("backup-agent ")
    config = root / "etc/backup-agent/config.json"
    assert config.stat().st_mode & 0o777 == 0o600
    assert (root / "etc/backup-agent").stat().st_mode & 0o777 == 0o700
    assert f'"server": "{portal}"' in config.read_text()
    assert '"/srv/new"' in config.read_text()  # the allow-list flags went through to enrol
    assert (root / "var/lib/backup-agent/spool").is_dir()
    assert (root / "etc/hostname").read_text() == "new01\n"

    # Run again: the server is enrolled already; nothing changes.
    before = snapshot(root)
    again = run(as_root(command), root)
    assert again.returncode != 0 and "already enrolled" in again.stderr
    assert snapshot(root) == before


def test_a_wrong_checksum_installs_nothing(portal, root, enrolment, tmp_path):
    request, token = enrolment
    script = saved_script(portal, tmp_path, PYZ_SHA256="0" * 64)
    before = snapshot(root)

    done = run(f"sh {script} {args_of(install_command(request, token))}", root)

    assert done.returncode != 0
    assert "checksum mismatch for backup-agent.pyz: expected 0000" in done.stderr
    assert "nothing was changed on this server" in done.stderr
    assert snapshot(root) == before
    assert ClientRequest.objects.get(pk=request.pk).status == RequestStatus.APPROVED  # not enrolled


def test_an_old_python_is_refused_with_a_clear_message(portal, root, enrolment, tmp_path):
    request, token = enrolment
    fake = tmp_path / "old-python"
    fake.mkdir()
    (fake / "python3").write_text('#!/bin/sh\necho "Python 3.9.2"\n')
    (fake / "python3").chmod(0o755)
    before = snapshot(root)

    done = run(as_root(install_command(request, token)), root, path=f"{fake}:{SYSTEM_PATH}")

    assert done.returncode != 0
    assert "the agent needs Python 3.11 or newer; python3 here is 'Python 3.9.2'" in done.stderr
    assert snapshot(root) == before


def test_a_missing_python_is_refused_with_a_clear_message(portal, root, enrolment, tmp_path):
    request, token = enrolment
    tools = tmp_path / "no-python"
    tools.mkdir()
    for tool in ("sh", "curl", "id", "mktemp", "rm", "sha256sum", "cut", "dirname", "chmod", "mkdir"):
        (tools / tool).symlink_to(shutil.which(tool, path=SYSTEM_PATH))
    before = snapshot(root)

    done = run(as_root(install_command(request, token)), root, path=str(tools))

    assert done.returncode != 0
    assert "python3 is not installed: the agent needs Python 3.11 or newer" in done.stderr
    assert snapshot(root) == before


def test_an_expired_token_stops_before_anything_is_installed(portal, root, enrolment):
    request, token = enrolment
    expired = timezone.now() - timedelta(hours=1)
    EnrolmentToken.objects.filter(pk=request.enrolment_id).update(expires_at=expired)
    before = snapshot(root)

    done = run(as_root(install_command(request, token)), root)

    assert done.returncode != 0
    assert "enrolment refused" in done.stderr  # the agent's own message
    assert "enrolment failed" in done.stderr and "needs a new command" in done.stderr
    assert "nothing was changed on this server" in done.stderr
    # enrol had made the spool and the instance id before the portal said no: rolled back.
    assert snapshot(root) == before
    assert ClientRequest.objects.get(pk=request.pk).status == RequestStatus.APPROVED


def test_an_unreachable_portal_stops_with_a_clear_message(portal, root, enrolment, tmp_path):
    request, token = enrolment
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    script = saved_script(portal, tmp_path, PORTAL=closed)
    before = snapshot(root)

    done = run(f"sh {script} {args_of(install_command(request, token))}", root)

    assert done.returncode != 0
    assert f"cannot download {closed}/agent/backup-agent.pyz: is the portal reachable" in done.stderr
    assert snapshot(root) == before


def test_no_token_is_a_usage_error(portal, root):
    done = run(f"curl -fsSL {portal}/agent/install.sh | sh -s -- --allow-path /srv", root)
    assert done.returncode != 0 and "no enrolment token" in done.stderr


def fake_systemctl(tmp_path: Path, *, fail_on: str = "") -> tuple[Path, Path]:
    """A `systemctl` that logs its calls (and fails on `fail_on`), and a stand-in for /run/systemd/system."""
    bin_dir, run_dir = tmp_path / "fake-systemd", tmp_path / "run-systemd"
    calls = tmp_path / "systemctl.calls"
    bin_dir.mkdir()
    run_dir.mkdir()
    script = f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *"{fail_on or "never"}"*) exit 1 ;; esac\n'
    (bin_dir / "systemctl").write_text(script)
    (bin_dir / "systemctl").chmod(0o755)
    return bin_dir, run_dir


def install_with_systemd(enrolment, root: Path, tmp_path: Path, *, fail_on: str = ""):
    """install.sh as root where systemd runs (fake_systemctl's), with the enrolment's token."""
    request, token = enrolment
    bin_dir, run_dir = fake_systemctl(tmp_path, fail_on=fail_on)
    return run(
        as_root(install_command(request, token)),
        root,
        path=f"{bin_dir}:{SYSTEM_PATH}",
        BACKUP_AGENT_NO_SYSTEMD="0",
        BACKUP_AGENT_SYSTEMD_RUN_DIR=str(run_dir),
    )


def test_with_systemd_the_unit_is_installed_enabled_and_started(portal, root, enrolment, tmp_path):
    done = install_with_systemd(enrolment, root, tmp_path)

    assert done.returncode == 0, done.stderr
    unit = (root / "etc/systemd/system/backup-agent.service").read_text()
    assert "ExecStart=/usr/local/bin/backup-agent run" in unit and "[Install]" in unit
    calls = (tmp_path / "systemctl.calls").read_text().splitlines()
    assert calls == ["daemon-reload", "enable --now backup-agent.service"]
    assert "backup-agent is running" in done.stdout


def test_a_service_that_does_not_start_is_rolled_back(portal, root, enrolment, tmp_path):
    before = snapshot(root)

    done = install_with_systemd(enrolment, root, tmp_path, fail_on="enable")

    assert done.returncode != 0
    assert "the backup-agent service did not start: journalctl -u backup-agent" in done.stderr
    assert "the server was enrolled, but the installation failed" in done.stderr
    calls = (tmp_path / "systemctl.calls").read_text().splitlines()
    assert calls[-2:] == ["disable --now backup-agent.service", "daemon-reload"]
    # The agent, its link and the unit are gone; the enrolment's config stays (the token is used up).
    after = snapshot(root)
    assert {key for key in after if key not in before} == {
        key for key in after if key.startswith(("etc/backup-agent", "var"))
    }
    assert (root / "etc/backup-agent/config.json").is_file()
    assert not (root / "usr/local/lib/backup-agent").exists()
    assert not (root / "etc/systemd").exists()


@pytest.mark.parametrize(
    "flag", ["--spool-dir /srv", "--spool-dir=/var/spool", "--state-dir /srv", "--spool /srv"]
)
def test_the_spool_and_state_folders_are_the_installers_own(portal, root, enrolment, flag):
    """`backup-agent uninstall` removes install.sh's state folder: one elsewhere (/srv) is refused here."""
    request, token = enrolment
    before = snapshot(root)

    done = run(f"{as_root(install_command(request, token))} {flag}", root)

    assert done.returncode != 0
    assert "--spool-dir and --state-dir are set by this installer" in done.stderr
    assert flag.split()[0].split("=")[0] in done.stderr and "leave it out" in done.stderr
    assert snapshot(root) == before
    assert ClientRequest.objects.get(pk=request.pk).status == RequestStatus.APPROVED


def test_a_download_cut_short_runs_nothing(portal, root, enrolment, tmp_path):
    """`curl | sh` of a truncated install.sh: the body is one function, so sh sees a syntax error first."""
    request, token = enrolment
    text = saved_script(portal, tmp_path).read_text()
    assert text.rstrip().endswith('\nmain "$@"')
    # Cut in the middle of main(): after the enrolment, before the installation.
    cut = tmp_path / "cut.sh"
    cut.write_text(text[: text.index("# --- Install ---")])
    before = snapshot(root)

    done = run(f"sh {cut} {args_of(install_command(request, token))}", root)

    assert done.returncode != 0 and "Syntax error" in done.stderr
    assert done.stdout == ""  # not even "downloading ..."
    assert snapshot(root) == before
    assert ClientRequest.objects.get(pk=request.pk).status == RequestStatus.APPROVED
