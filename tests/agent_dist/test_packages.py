"""The wheel, the zipapp and the Debian package: real builds, inspected and run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import backup_agent
from agent_dist import build
from backup_agent import upgrade
from tests.agent_dist.conftest import require

VERSION = backup_agent.__version__


def test_the_version_is_the_protocol_release():
    assert VERSION.split(".")[0] == str(backup_agent.PROTOCOL_VERSION)
    assert build.version() == VERSION


def test_the_artifacts_are_named_as_dist_agent_expects(dist):
    assert dist["wheel"].name == f"backup_agent-{VERSION}-py3-none-any.whl"
    assert dist["pyz"].name == "backup-agent.pyz"
    assert dist["deb"].name == f"backup-agent_{VERSION}_all.deb"
    assert dist["sha256"].read_text() == f"{build.sha256_of(dist['pyz'])}  backup-agent.pyz\n"


def test_the_wheel_holds_the_agent_and_nothing_else(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"backup_agent-{VERSION}.dist-info/METADATA").decode()
        entry_points = wheel.read(f"backup_agent-{VERSION}.dist-info/entry_points.txt").decode()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"backup_agent", f"backup_agent-{VERSION}.dist-info"}
    assert not any("django" in name.lower() or name.startswith(("portal/", "catalog/")) for name in names)
    assert "backup_agent/plugins/postgresql.py" in names and "backup_agent/cli.py" in names
    assert not any("__pycache__" in name for name in names)
    assert "Name: backup-agent\n" in metadata and f"Version: {VERSION}\n" in metadata
    assert "Requires-Python: >=3.11" in metadata and "Requires-Dist" not in metadata
    assert "backup-agent = backup_agent.cli:main" in entry_points


def test_the_wheel_installs_into_a_bare_virtualenv(dist, tmp_path):
    python = shutil.which("python3.11")
    assert python, "python3.11 is required (the Makefile's PYTHON)"
    venv = tmp_path / "bare"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    # --no-index: nothing but the wheel itself can be installed, so it must need nothing else.
    subprocess.run([*pip, "install", "--no-index", str(dist["wheel"])], check=True, timeout=120)
    installed = subprocess.run([*pip, "list", "--format=freeze"], capture_output=True, text=True, check=True)
    assert f"backup-agent=={VERSION}" in installed.stdout
    assert "Django" not in installed.stdout
    done = subprocess.run(
        [str(venv / "bin" / "backup-agent"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"backup-agent {VERSION}"
    no_django = subprocess.run([str(venv / "bin" / "python"), "-c", "import django"], capture_output=True)
    assert no_django.returncode != 0


def test_the_zipapp_runs_alone_and_is_reproducible(dist, tmp_path):
    data = dist["pyz"].read_bytes()
    assert data.startswith(b"#!/usr/bin/env python3\n")
    assert dist["pyz"].stat().st_mode & 0o111
    with zipfile.ZipFile(dist["pyz"]) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        assert {info.date_time for info in archive.infolist()} == {(2024, 1, 1, 0, 0, 0)}
    assert "__main__.py" in names and all(n == "__main__.py" or n.startswith("backup_agent/") for n in names)
    # -I: no site-packages, no PYTHONPATH, no current folder: only what is inside the zipapp.
    done = subprocess.run(
        ["/usr/bin/python3", "-I", str(dist["pyz"]), "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"backup-agent {VERSION}"
    again = tmp_path / "again.pyz"
    assert build.build_zipapp(again) == build.sha256_of(dist["pyz"])
    assert again.read_bytes() == data


def dpkg_deb(*args: str) -> str:
    return subprocess.run(
        [require("dpkg-deb"), *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_the_deb_is_a_debian_package_of_the_zipapp(dist, tmp_path):
    info = dpkg_deb("--info", str(dist["deb"]))
    for line in ("Package: backup-agent", f"Version: {VERSION}", "Architecture: all"):
        assert line in info
    for line in ("Depends: python3 (>= 3.11)",):
        assert line in info
    for script in ("postinst", "prerm", "postrm"):
        assert script in info
    contents = dpkg_deb("--contents", str(dist["deb"]))
    rows = {line.split()[5]: line for line in contents.splitlines()}
    assert rows["./usr/lib/backup-agent/backup-agent.pyz"].startswith("-rwxr-xr-x root/root")
    assert rows["./lib/systemd/system/backup-agent.service"].startswith("-rw-r--r-- root/root")
    assert "./usr/bin/backup-agent -> ../lib/backup-agent/backup-agent.pyz" in contents
    assert all(" root/root " in line for line in contents.splitlines())

    root = tmp_path / "unpacked"
    dpkg_deb("--extract", str(dist["deb"]), str(root))
    assert (root / "usr/lib/backup-agent/backup-agent.pyz").read_bytes() == dist["pyz"].read_bytes()
    unit = (root / "lib/systemd/system/backup-agent.service").read_text()
    assert "ExecStart=/usr/bin/backup-agent run" in unit and "User=root" in unit
    assert "Environment=BACKUP_AGENT_CONFIG=/etc/backup-agent/config.json" in unit
    # An automatic upgrade's exit 75 restarts the agent and is no failure of the unit.
    assert "RestartForceExitStatus=75\n" in unit and "SuccessExitStatus=75\n" in unit


def test_the_maintainer_scripts_make_the_0700_folder_and_the_user_and_undo_them(dist, tmp_path):
    control = tmp_path / "control"
    dpkg_deb("--control", str(dist["deb"]), str(control))
    postinst = (control / "postinst").read_text()
    postrm = (control / "postrm").read_text()
    assert "CONFIG_DIR=/etc/backup-agent\n" in postinst and 'chmod 0700 "$CONFIG_DIR"' in postinst
    assert "adduser --system" in postinst and "getent passwd backup-agent" in postinst
    assert 'rm -rf "$CONFIG_DIR" "$STATE_DIR"' in postrm and "deluser --system" in postrm
    # The purge branch only: `remove` keeps the config for a reinstall.
    purge = postrm.split("purge)")[1].split(";;")[0]
    remove = postrm.split("remove)")[1].split(";;")[0]
    assert "rm -rf" in purge and "rm -rf" not in remove
    for script in ("postinst", "prerm", "postrm"):
        assert (control / script).stat().st_mode & 0o111
        subprocess.run(["sh", "-n", str(control / script)], check=True)
        checked = subprocess.run(
            [require("shellcheck"), "-s", "sh", str(control / script)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="Debian packages are for Linux")
def test_the_build_script_writes_dist_agent(tmp_path):
    require("dpkg-deb")
    out = tmp_path / "dist" / "agent"
    script = Path(__file__).resolve().parents[2] / "scripts" / "build_agent.py"
    argv = ["/usr/bin/python3", "-I", str(script), "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            f"backup_agent-{VERSION}-py3-none-any.whl",
            "backup-agent.pyz",
            "backup-agent.pyz.sha256",
            f"backup-agent_{VERSION}_all.deb",
        ]
    )


# --- the maintainer scripts, run with their folders pointed into a temporary root ---------------------


@pytest.fixture
def scripts(dist, tmp_path):
    """The .deb's postinst and postrm, their folders under tmp_path, a fake systemctl (and getent)."""
    control = tmp_path / "control"
    dpkg_deb("--control", str(dist["deb"]), str(control))
    folders = {
        "CONFIG_DIR": tmp_path / "etc/backup-agent",
        "STATE_DIR": tmp_path / "var/lib/backup-agent",
        "SYSTEMD_RUN_DIR": tmp_path / "run/systemd/system",
    }
    folders["SYSTEMD_RUN_DIR"].mkdir(parents=True)
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    fakes = {
        "systemctl": f'echo "systemctl $*" >> {calls}',
        "systemd-run": f'echo "systemd-run $*" >> {calls}',
        "getent": "exit 0",  # the backup-agent user exists: none is made on this machine
    }
    for tool, body in fakes.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)

    def run(script: str, *args: str, job_wait: int = 1, **env: str) -> subprocess.CompletedProcess:
        text = (control / script).read_text()
        for name, value in {**folders, "JOB_WAIT": job_wait}.items():
            text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
            assert count <= 1, name
        copy = tmp_path / script
        copy.write_text(text)
        environ = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", **env}
        return subprocess.run(
            ["sh", str(copy), *args], capture_output=True, text=True, env=environ, timeout=60
        )

    def systemctl_calls() -> list[str]:
        return calls.read_text().splitlines() if calls.exists() else []

    run.folders, run.calls = folders, systemctl_calls
    return run


def test_the_postinst_of_an_upgrade_restarts_the_agent_only_between_jobs(scripts):
    state = scripts.folders["STATE_DIR"]
    state.mkdir(parents=True)
    with upgrade.job_running(state):  # the running agent, in the middle of a job
        done = scripts("postinst", "configure", "4.0.0")
    assert done.returncode == 0, done.stderr
    assert "a job is still running after 1s" in done.stderr and "as soon as the running jobs" in done.stderr
    # Not restarted now: a transient unit restarts it once the job lock is free.
    assert scripts.calls() == [
        "systemctl daemon-reload",
        "systemd-run --quiet --collect --unit=backup-agent-upgrade-restart "
        f"flock -x {state}/jobs.lock systemctl try-restart backup-agent.service",
    ]

    done = scripts("postinst", "configure", "4.0.0")  # no job: restarted at once
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert scripts.calls()[-1] == "systemctl try-restart backup-agent.service"


def test_the_postinst_under_backup_agent_upgrade_restarts_at_once(scripts):
    """`backup-agent upgrade` holds jobs.lock itself around dpkg -i: the postinst must not wait for it."""
    state = scripts.folders["STATE_DIR"]
    with upgrade.idle(state, wait=False):
        done = scripts("postinst", "configure", "4.0.0", job_wait=30, BACKUP_AGENT_JOB_LOCK_HELD="1")
    assert done.returncode == 0, done.stderr
    assert scripts.calls() == ["systemctl daemon-reload", "systemctl try-restart backup-agent.service"]


def test_purge_keeps_unsent_reports_and_says_so(scripts):
    config, state = scripts.folders["CONFIG_DIR"], scripts.folders["STATE_DIR"]
    spool = state / "spool"
    spool.mkdir(parents=True)
    config.mkdir(parents=True)
    (config / "config.json").write_text("{}")
    (state / "instance-id").write_text("x\n")
    for name in ("12.json", "13.json", "14.bad", ".15.json.tmp-0a1b2c3d"):
        (spool / name).write_text("{}")

    done = scripts("postrm", "purge")

    assert done.returncode == 0, done.stderr
    assert f"3 unsent job report(s) kept in {spool}" in done.stderr
    assert sorted(p.name for p in state.iterdir()) == ["spool"] and (spool / "12.json").is_file()
    assert not config.exists()

    for path in spool.iterdir():
        path.unlink()
    done = scripts("postrm", "purge")
    assert done.returncode == 0 and done.stderr == ""
    assert not state.exists()
