"""`backup-agent uninstall` after install.sh, end to end against a live portal (issue #18, decommission).

The agent is installed with the portal's install.sh into a temporary root (the fixtures and
helpers of test_install_sh.py), then removed by the installed agent itself with a fake
systemctl: what install.sh put there goes, unsent reports are sent or kept, storage stays.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from backup_agent import uninstall as uninstall_module
from backup_agent.config import Config, write_private
from backup_agent.uninstall import Layout
from catalog.choices import JobState
from catalog.models import Agent, Job
from catalog.services import jobs
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel
from requests_app.enrolment import install_command
from tests.agent_dist import test_install_sh as install_sh
from tests.agent_dist.test_install_sh import SYSTEM_PATH, as_root, fake_systemctl, run, snapshot

# install.sh's tests' fixtures: a live portal, the host's root, an approved request and its token.
portal = install_sh.portal
root = install_sh.root
enrolment = install_sh.enrolment

pytestmark = pytest.mark.e2e


@pytest.fixture
def installed(portal, root, enrolment, tmp_path) -> dict:
    """install.sh run with systemd (fake): the agent, its link, its unit, its config and spool."""
    request, token = enrolment
    storage = root / "srv" / "backups"
    (storage / "orders").mkdir(parents=True)
    (storage / "orders" / "job-1.tar.zst").write_bytes(b"a backup")
    bin_dir, run_dir = fake_systemctl(tmp_path)
    systemd = {
        "path": f"{bin_dir}:{SYSTEM_PATH}",
        "BACKUP_AGENT_NO_SYSTEMD": "0",
        "BACKUP_AGENT_SYSTEMD_RUN_DIR": str(run_dir),
    }
    command = as_root(install_command(request, token)) + f" --allow-storage {storage}"
    done = run(command, root, **systemd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "etc/systemd/system/backup-agent.service").is_file()
    return {"storage": storage, "systemd": systemd, "calls": tmp_path / "systemctl.calls", "portal": portal}


def uninstall(root: Path, installed: dict, *args: str) -> subprocess.CompletedProcess:
    return run(f"{root}/usr/local/bin/backup-agent uninstall {' '.join(args)}", root, **installed["systemd"])


def spool_report(root: Path, job: Job) -> Path:
    """A finished job's report the agent has not delivered yet, as the agent spools it."""
    spool = root / "var/lib/backup-agent/spool"
    entry = {
        "job_id": job.pk,
        "spooled_at": time.time(),
        "report": {"status": "failed", "error": "disk full", "log_tail": "", "error_class": ""},
    }
    path = spool / f"{job.pk}.json"
    path.write_text(json.dumps(entry))
    return path


def running_job(hostname: str) -> Job:
    agent = Agent.objects.get(hostname=hostname)
    job = jobs.queue_backup(agent.clients.get())
    lease = job.created_at.replace(year=2100)
    Job.objects.filter(pk=job.pk).update(state=JobState.RUNNING, lease_expires_at=lease)
    return job


INSTALLED = {
    "usr/local/lib/backup-agent",
    "usr/local/lib/backup-agent/backup-agent.pyz",
    "usr/local/bin/backup-agent",
    "etc/systemd/system/backup-agent.service",
    "etc/backup-agent",
    "etc/backup-agent/config.json",
    "var/lib/backup-agent",
}


def test_dry_run_lists_and_changes_nothing(root, installed):
    before = snapshot(root)

    done = uninstall(root, installed, "--dry-run")

    assert done.returncode == 0, done.stderr
    assert "dry run: nothing is changed" in done.stdout
    for path in ("usr/local/lib/backup-agent/backup-agent.pyz", "etc/backup-agent", "var/lib/backup-agent"):
        assert f"remove {root / path}" in done.stdout
    assert "stop and disable backup-agent.service" in done.stdout
    assert snapshot(root) == before
    assert "disable" not in installed["calls"].read_text()


def test_uninstall_sends_the_spool_removes_everything_and_a_second_run_finds_nothing(root, installed):
    job = running_job("new01.example.com")
    spool_report(root, job)
    storage_before = snapshot(installed["storage"])

    done = uninstall(root, installed)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "sending 1 unsent report(s)" in done.stdout and "sent 1 report(s)" in done.stdout
    assert Job.objects.get(pk=job.pk).state == JobState.FAILED  # the portal has the report
    assert "backup-agent is uninstalled" in done.stdout
    untouched = done.stdout.splitlines()[-1]
    assert untouched.startswith("backups on protection storage (") and untouched.endswith("are not touched")
    assert str(installed["storage"]) in untouched
    calls = installed["calls"].read_text().splitlines()
    assert calls[-2:] == ["disable --now backup-agent.service", "daemon-reload"]
    left = snapshot(root)
    assert not INSTALLED & set(left), sorted(INSTALLED & set(left))
    assert (root / "etc/hostname").read_text() == "new01\n"  # not ours: untouched
    assert (root / "usr/local/bin").is_dir()
    assert snapshot(installed["storage"]) == storage_before

    second = uninstall_with_a_copy(root, installed["portal"], **installed["systemd"])
    assert second.returncode == 0, second.stderr
    assert "nothing left to remove" in second.stdout


def uninstall_with_a_copy(root: Path, portal: str, **env: str) -> subprocess.CompletedProcess:
    """The installed agent went with the first run: a second run uses the portal's zipapp, downloaded."""
    copy = root.parent / "backup-agent.pyz"
    subprocess.run(["curl", "-fsSL", "-o", str(copy), f"{portal}/agent/backup-agent.pyz"], check=True)
    return run(f"python3 {copy} uninstall", root, **env)


def test_unsent_reports_of_a_revoked_agent_are_kept_until_discarded(root, installed, owner, backup_admin):
    job = running_job("new01.example.com")
    report = spool_report(root, job)
    # The owner retires the host's last client; the backup team approves: the agent is revoked.
    agent = Agent.objects.get(hostname="new01.example.com")
    retire = services.submit_retire(actor=Actor.person(owner), client=agent.clients.get())
    services.approve(type(retire), retire.pk, actor=Actor.person(backup_admin, Channel.ADMIN))
    storage_before = snapshot(installed["storage"])

    kept = uninstall(root, installed)

    assert kept.returncode == 1, kept.stdout + kept.stderr
    assert "1 report(s) could not be sent to the portal: kept in" in kept.stdout
    assert "--discard-spool" in kept.stdout and "backup-agent uninstall` again" in kept.stdout
    assert report.is_file()
    # The service is stopped and gone; what sending the report needs stays.
    assert not (root / "etc/systemd/system/backup-agent.service").exists()
    assert (root / "usr/local/bin/backup-agent").is_symlink()
    assert (root / "etc/backup-agent/config.json").is_file()

    discarded = uninstall(root, installed, "--discard-spool")

    assert discarded.returncode == 0, discarded.stdout + discarded.stderr
    assert "dropped 1 unsent report(s) (--discard-spool)" in discarded.stdout
    assert not INSTALLED & set(snapshot(root))
    assert snapshot(installed["storage"]) == storage_before
    assert uninstall_with_a_copy(root, installed["portal"]).stdout.startswith("nothing left to remove")


def test_a_deb_install_is_left_to_apt(root, installed):
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/info/backup-agent.list").write_text("/usr/lib/backup-agent/backup-agent.pyz\n")
    before = snapshot(root)

    done = uninstall(root, installed)

    assert done.returncode == 2
    assert "installed from the Debian package: remove it with `apt purge backup-agent`" in done.stderr
    assert "Nothing was removed." in done.stderr
    assert snapshot(root) == before


def test_a_server_without_the_agent_has_nothing_to_remove(root, portal):
    done = uninstall_with_a_copy(root, portal)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nothing left to remove")


# --- a spool folder the config names outside install.sh's layout (enrol --spool-dir) -----------------


NO_SYSTEMD = {"BACKUP_AGENT_NO_SYSTEMD": "1"}


def enrolled_by_hand(tmp_path: Path, spool_dir: Path) -> Layout:
    """install.sh's layout under a prefix, its config naming ``spool_dir`` (and its state) elsewhere."""
    layout = Layout(str(tmp_path / "root"))
    layout.state_dir.mkdir(parents=True)
    (layout.state_dir / "instance-id").write_text("x\n")
    write_private(
        layout.config_dir / "config.json",
        Config(server="http://127.0.0.1:9", agent_token="t", hostname="h", spool_dir=str(spool_dir)),
    )
    return layout


def test_a_spool_folder_elsewhere_loses_only_the_spools_own_files(tmp_path):
    shared = tmp_path / "srv"  # what `--spool-dir /srv` would have named
    (shared / "app").mkdir(parents=True)
    (shared / "app" / "data.db").write_text("the application's data")
    (shared / "notes.json").write_text("{}")  # a .json, but not a report's name
    report = {"job_id": 12, "spooled_at": 1.0, "report": {"status": "failed"}}
    (shared / "12.json").write_text(json.dumps(report))  # an unsent report
    (shared / "13.bad").write_text("?")  # one parked as unreadable
    (shared / ".14.json.tmp-0a1b2c3d").write_text("")  # one being written
    layout = enrolled_by_hand(tmp_path, shared)

    dry = uninstall_module.uninstall(layout=layout, dry_run=True, environ=NO_SYSTEMD)
    assert f"remove {shared}\n" not in "\n".join(dry.lines) + "\n"
    assert f"remove the spool's own files in {shared}" in "\n".join(dry.lines)

    done = uninstall_module.uninstall(layout=layout, discard_spool=True, environ=NO_SYSTEMD)

    assert done.exit_code == 0, done.lines
    assert "dropped 1 unsent report(s) (--discard-spool)" in done.lines
    assert sorted(p.name for p in shared.iterdir()) == ["app", "notes.json"]
    assert (shared / "app" / "data.db").read_text() == "the application's data"
    assert f"note: {shared} holds other files than the spool's: it is kept" in done.lines
    assert not layout.state_dir.exists() and not layout.config_dir.exists()  # install.sh's own: whole


def test_a_spool_folder_elsewhere_holding_only_the_spool_is_removed(tmp_path):
    spool = tmp_path / "var-spool" / "backup-agent"
    spool.mkdir(parents=True)
    (spool / "7.bad").write_text("?")
    layout = enrolled_by_hand(tmp_path, spool)

    done = uninstall_module.uninstall(layout=layout, environ=NO_SYSTEMD)

    assert done.exit_code == 0, done.lines
    assert not spool.exists() and (tmp_path / "var-spool").is_dir()
    assert f"removed {spool}" in done.lines
