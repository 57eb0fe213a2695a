"""`backup-agent upgrade` for real: an installed zipapp upgrades itself from a live portal, verified.

The portal serves a "4.0.1" zipapp (backup_agent/ with a patched version, built by agent_dist.build)
from a temporary PORTAL_AGENT_DIST_DIR; the installed 4.0.0 zipapp lives under a temporary prefix,
as install.sh lays it out (/usr/local/lib/backup-agent/backup-agent.pyz, /usr/local/bin/backup-agent
a relative symlink to it), and runs as a program, with a fake systemctl that records its calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import backup_agent
from agent_dist import artifacts, build
from backup_agent import upgrade
from catalog import agent_versions
from catalog.models import Agent
from catalog.services import agents
from tests.agent_dist.test_install_sh import fake_systemctl

pytestmark = pytest.mark.e2e

CURRENT = backup_agent.__version__
NEWER = "4.0.1"
SYSTEM_PATH = "/usr/bin:/bin"


def source_with_version(folder: Path, version: str) -> Path:
    """A copy of backup_agent/ whose __version__ is ``version``."""
    src = folder / "backup_agent"
    shutil.copytree(build.agent_source(), src, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{CURRENT}"', f'__version__ = "{version}"'))
    return src


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """Zipapps of this agent (4.0.0) and of a newer one (4.0.1)."""
    folder = tmp_path_factory.mktemp("agent-builds")
    newer = folder / "newer" / "backup-agent.pyz"
    newer.parent.mkdir()
    build.build_zipapp(newer, source_with_version(folder / "newer-src", NEWER))
    current = folder / "current" / "backup-agent.pyz"
    current.parent.mkdir()
    build.build_zipapp(current)
    return {NEWER: newer, CURRENT: current}


@pytest.fixture
def served(settings, tmp_path):
    """What the portal serves: serve(version) puts that build in place, as artifacts.zipapp() keeps it."""
    folder = tmp_path / "portal-agent"
    folder.mkdir()
    settings.PORTAL_AGENT_DIST_DIR = folder

    def serve(pyz: Path, version: str, *, published: str | None = None) -> str:
        shutil.copyfile(pyz, folder / build.PYZ_NAME)
        sha = build.sha256_of(folder / build.PYZ_NAME)
        manifest = {"source": artifacts.source_digest(), "version": version, "pyz_sha256": published or sha}
        (folder / artifacts.MANIFEST).write_text(json.dumps(manifest))
        return sha

    return serve


@pytest.fixture
def portal(live_server, settings):
    settings.PORTAL_BASE_URL = live_server.url
    return live_server.url


@pytest.fixture
def host(tmp_path, portal):
    """A host with an agent installed as install.sh installs it, and its config."""

    class Host:
        root = tmp_path / "root"
        lib = root / "usr/local/lib/backup-agent"
        pyz = lib / "backup-agent.pyz"
        bin = root / "usr/local/bin/backup-agent"
        config = root / "etc/backup-agent/config.json"
        state = root / "var/lib/backup-agent"
        systemd_bin, systemd_run = fake_systemctl(tmp_path)
        calls = tmp_path / "systemctl.calls"

        def install(self, pyz: Path) -> None:
            self.lib.mkdir(parents=True, exist_ok=True)
            self.bin.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pyz, self.pyz)
            self.pyz.chmod(0o755)
            if not self.bin.is_symlink():
                self.bin.symlink_to("../lib/backup-agent/backup-agent.pyz")

        def enrol_config(self):
            """A config as `enrol` writes it; `upgrade` needs no token (the downloads are public)."""
            self.config.parent.mkdir(parents=True, exist_ok=True)
            config = {
                "server": portal, "agent_token": "bpa_unused", "hostname": "app01.example.com",
                "spool_dir": str(self.state / "spool"), "state_dir": str(self.state), "poll_after": 1,
            }  # fmt: skip
            self.config.write_text(json.dumps(config))
            self.config.chmod(0o600)

        def run(self, *args: str, wait: bool = True, timeout: float = 120, **extra: str):
            env = {
                "PATH": f"{self.systemd_bin}:{SYSTEM_PATH}",
                "LANG": "C.UTF-8",
                "BACKUP_AGENT_SYSTEMD_RUN_DIR": str(self.systemd_run),
                "BACKUP_AGENT_CONFIG": str(self.config),
                **extra,
            }
            command = [str(self.bin), *args]
            if not wait:
                return subprocess.Popen(
                    command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)

        def enrol(self, token: str, *flags: str):
            return self.run(
                "enrol", "--server", portal, "--token", token, "--hostname", "app01.example.com",
                "--spool-dir", str(self.state / "spool"), "--state-dir", str(self.state), *flags,
            )  # fmt: skip

        def version(self) -> str:
            return self.run("--version").stdout.strip()

        def leftovers(self) -> list[str]:
            return sorted(p.name for p in self.lib.iterdir() if p.name != "backup-agent.pyz")

        def restarts(self) -> list[str]:
            return self.calls.read_text().splitlines() if self.calls.exists() else []

    return Host()


def test_upgrade_replaces_the_zipapp_verified_and_restarts_the_service(host, served, builds):
    sha = served(builds[NEWER], NEWER)
    host.install(builds[CURRENT])
    host.enrol_config()
    assert host.version() == f"backup-agent {CURRENT}"

    done = host.run("upgrade")

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"backup-agent {CURRENT} -> {NEWER}" in done.stdout and "SHA-256 verified" in done.stdout
    assert hashlib.sha256(host.pyz.read_bytes()).hexdigest() == sha
    assert os.access(host.pyz, os.X_OK) and os.readlink(host.bin) == "../lib/backup-agent/backup-agent.pyz"
    assert host.version() == f"backup-agent {NEWER}"
    assert host.restarts() == ["try-restart backup-agent.service"]
    assert host.leftovers() == []
    # Again: the portal's version is installed, nothing to do, no restart.
    again = host.run("upgrade")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert host.restarts() == ["try-restart backup-agent.service"]


def test_a_wrong_checksum_changes_nothing(host, served, builds):
    served(builds[NEWER], NEWER, published="0" * 64)
    host.install(builds[CURRENT])
    host.enrol_config()
    before = host.pyz.read_bytes()

    done = host.run("upgrade")

    assert done.returncode == 1
    assert "the portal publishes " + "0" * 64 in done.stderr and "nothing changed" in done.stderr
    assert host.pyz.read_bytes() == before and host.leftovers() == [] and host.restarts() == []
    assert host.version() == f"backup-agent {CURRENT}"


def test_a_downgrade_is_refused_unless_forced(host, served, builds):
    served(builds[CURRENT], CURRENT)
    host.install(builds[NEWER])
    host.enrol_config()

    done = host.run("upgrade")
    assert done.returncode == 1 and "refusing a downgrade (--force installs it anyway)" in done.stderr
    assert host.version() == f"backup-agent {NEWER}" and host.leftovers() == [] and host.restarts() == []

    forced = host.run("upgrade", "--force")
    assert forced.returncode == 0, forced.stderr
    assert host.version() == f"backup-agent {CURRENT}"


def test_a_running_job_is_never_interrupted(host, served, builds):
    sha = served(builds[NEWER], NEWER)
    host.install(builds[CURRENT])
    host.enrol_config()
    before = host.pyz.read_bytes()

    with upgrade.job_running(host.state):  # what the runner holds while a job runs
        done = host.run("upgrade")
        assert done.returncode == 1
        assert "a job is running; try again or use --when-idle" in done.stderr
        assert host.pyz.read_bytes() == before and host.leftovers() == [] and host.restarts() == []

        waiting = host.run("upgrade", "--when-idle", wait=False)
        time.sleep(3)
        assert waiting.poll() is None  # waits for the job
        assert host.pyz.read_bytes() == before and host.restarts() == []
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, out + err
    assert "as soon as it is done" in err
    assert hashlib.sha256(host.pyz.read_bytes()).hexdigest() == sha
    assert host.restarts() == ["try-restart backup-agent.service"]


def test_an_unreachable_portal_changes_nothing(host, builds, tmp_path):
    host.install(builds[CURRENT])
    host.enrol_config()
    config = json.loads(host.config.read_text())
    config["server"] = "http://127.0.0.1:9"
    host.config.write_text(json.dumps(config))
    done = host.run("upgrade")
    assert done.returncode == 1 and "cannot download the agent from the portal" in done.stderr
    assert host.leftovers() == [] and host.restarts() == []


def test_a_wheel_install_is_left_to_pip(tmp_path, capsys, caplog):
    """Not running from a zipapp (here: from the source, as from a wheel): upgrade says who manages it."""
    from backup_agent import cli

    config = tmp_path / "config.json"
    config.write_text(json.dumps(
        {"server": "https://backup.example.com", "agent_token": "t", "hostname": "h"}
    ))
    config.chmod(0o600)
    assert upgrade.running_zipapp() is None
    assert cli.main(["upgrade", "--config", str(config)]) == 1
    assert "installed by pip or pipx" in caplog.text and "pip install --upgrade backup-agent" in caplog.text


def test_there_is_no_upgrade_without_a_restart(tmp_path, capsys):
    """A running agent on a replaced zipapp breaks at its next import: `upgrade` always restarts it."""
    from backup_agent import cli

    with pytest.raises(SystemExit) as refused:
        cli.main(["upgrade", "--no-restart", "--config", str(tmp_path / "config.json")])
    assert refused.value.code == 2 and "--no-restart" in capsys.readouterr().err


class PortalFiles:
    """A PortalClient stand-in: download(path) answers from a dict."""

    server = "https://backup.example.com"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.asked: list[str] = []

    def download(self, path: str, limit: int) -> bytes:
        self.asked.append(path)
        return self.files[path]


def test_the_whole_deb_is_verified_before_dpkg_sees_it(monkeypatch):
    """Its maintainer scripts run as root: the package's own SHA-256, not only its zipapp's."""
    from backup_agent.config import Config

    monkeypatch.setattr(upgrade.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    ran = []
    monkeypatch.setattr(upgrade.subprocess, "run", lambda *a, **kw: ran.append(a) or pytest.fail("ran"))
    deb = b"!<arch>\ndebian-binary   a tampered package"
    client = PortalFiles({
        upgrade.SHA256_PATH: b"ab" * 32 + b"  backup-agent.pyz\n",
        upgrade.DEB_SHA256_PATH: b"cd" * 32 + b"  backup-agent_4.0.1_all.deb\n",
        upgrade.DEB_PATH: deb,
    })  # fmt: skip
    config = Config(server=client.server, agent_token="t", hostname="h")

    with pytest.raises(upgrade.UpgradeError) as refused:
        upgrade.upgrade(config, target=Path(upgrade.DEB_PYZ), client=client)

    assert f"the package's SHA-256 is {hashlib.sha256(deb).hexdigest()}" in str(refused.value)
    message = str(refused.value)
    assert "the portal publishes " + "cd" * 32 in message and "nothing changed" in message
    assert ran == [] and upgrade.DEB_SHA256_PATH in client.asked


def test_the_debian_package_is_not_upgraded_from_inside_the_service():
    from backup_agent.config import Config

    config = Config(server="https://backup.example.com", agent_token="t", hostname="h")
    with pytest.raises(upgrade.UpgradeError, match="upgraded by dpkg, not from inside the running service"):
        upgrade.upgrade(config, target=Path(upgrade.DEB_PYZ), automatic=True)


# --- automatic upgrade ------------------------------------------------------------------------


@pytest.fixture
def enrolled(host, app, monkeypatch):
    """The installed agent enrolled for real (its own `enrol`), the portal shipping 4.0.1."""
    monkeypatch.setattr(agent_versions, "shipped_version", lambda: NEWER)
    _, token = agents.issue_enrolment_token(application=app, hostname="app01.example.com")
    return token


def test_automatic_upgrade_between_jobs_then_exit_for_systemd(host, served, builds, enrolled, portal):
    sha = served(builds[NEWER], NEWER)
    host.install(builds[CURRENT])
    done = host.enrol(enrolled, "--allow-auto-upgrade")  # the server's admin consents
    assert done.returncode == 0, done.stderr
    assert json.loads(host.config.read_text())["auto_upgrade"] is True
    agent = Agent.objects.get(hostname="app01.example.com")
    assert agent.version == CURRENT and agent.is_outdated and not agent.auto_upgrade

    # Switch off: the agent polls and stays as it is.
    idle = host.run("run", "--once")
    assert idle.returncode == 0, idle.stderr
    assert host.version() == f"backup-agent {CURRENT}"

    Agent.objects.filter(pk=agent.pk).update(auto_upgrade=True)
    # Started by hand, not by systemd (which would restart it): it says what to run, once, and stays.
    by_hand = host.run("run", wait=False)
    time.sleep(5)  # a few polls (poll_after 1)
    by_hand.terminate()
    out, err = by_hand.communicate(timeout=60)
    assert by_hand.returncode == 0, err
    assert err.count(f"the portal offers backup-agent {NEWER}") == 1, err
    assert "does not run as the systemd service" in err and "sudo backup-agent upgrade" in err
    assert host.version() == f"backup-agent {CURRENT}"

    # As the service: systemd sets INVOCATION_ID.
    running = host.run("run", wait=False, INVOCATION_ID="0123456789abcdef")
    try:
        out, err = running.communicate(timeout=90)
    finally:
        running.kill()
    assert running.returncode == upgrade.RESTART_EXIT, err
    assert f"the portal offers backup-agent {NEWER}" in err and f"upgraded to backup-agent {NEWER}" in err
    assert hashlib.sha256(host.pyz.read_bytes()).hexdigest() == sha
    assert host.version() == f"backup-agent {NEWER}"
    assert host.restarts() == []  # systemd restarts it (RestartForceExitStatus=75): no systemctl from inside
    assert host.leftovers() == []
    # Straight after the swap: nothing ran on the replaced zipapp but the way out.
    after = err.split(f"upgraded to backup-agent {NEWER}", 1)[1]
    assert "Traceback" not in err and "ERROR" not in after, err


def test_an_unsupported_agent_logs_the_portal_message(host, served, builds, enrolled, portal, monkeypatch):
    """A real old agent meets a portal that no longer speaks its protocol: refused, told how to upgrade."""
    host.install(builds[CURRENT])
    done = host.enrol(enrolled)
    assert done.returncode == 0, done.stderr
    monkeypatch.setattr(Agent, "OLDEST_PROTOCOL", backup_agent.PROTOCOL_VERSION + 1)
    refused = host.run("run", "--once")
    assert refused.returncode == 1
    assert f"the portal refuses this agent (backup-agent {CURRENT})" in refused.stderr
    assert f"{portal}/agent/install.sh" in refused.stderr and "`backup-agent upgrade`" in refused.stderr



def test_a_package_with_a_damaged_file_system_is_refused_in_words(tmp_path, monkeypatch):
    """dpkg-deb hands back something that is not a tar: an UpgradeError, not a traceback."""
    import subprocess as real_subprocess

    from backup_agent import upgrade

    def fake_run(*args, **kwargs):
        return real_subprocess.CompletedProcess(args, 0, stdout=b"not a tar archive" * 100, stderr=b"")

    monkeypatch.setattr(upgrade.subprocess, "run", fake_run)
    with pytest.raises(upgrade.UpgradeError, match="damaged file system; nothing changed"):
        upgrade._packaged_zipapp("dpkg-deb", tmp_path / "backup-agent.deb")
