"""The wheel, the zipapp and the Debian package: real builds, inspected and run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import backup_agent
from agent_dist import build
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


def test_the_maintainer_scripts_make_the_0700_folder_and_the_user_and_undo_them(dist, tmp_path):
    control = tmp_path / "control"
    dpkg_deb("--control", str(dist["deb"]), str(control))
    postinst = (control / "postinst").read_text()
    postrm = (control / "postrm").read_text()
    assert "chmod 0700 /etc/backup-agent" in postinst
    assert "adduser --system" in postinst and "getent passwd backup-agent" in postinst
    assert "rm -rf /etc/backup-agent /var/lib/backup-agent" in postrm and "deluser --system" in postrm
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
