"""`backup-agent upgrade` of the Debian package: dpkg installs the portal's newer .deb, once its zipapp
is the one whose SHA-256 the portal publishes. Installs the package on this machine (as root, like
test_deb_install.py) and purges it whatever happens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent_dist import artifacts, build
from tests.agent_dist.conftest import require
from tests.agent_dist.test_deb_install import LEFT_BEHIND, dpkg, installed, user_exists
from tests.agent_dist.test_upgrade import CURRENT, NEWER, source_with_version

pytestmark = pytest.mark.e2e

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> dict[str, dict[str, Path]]:
    require("dpkg-deb")
    folder = tmp_path_factory.mktemp("agent-debs")
    found = {}
    for version, src in ((CURRENT, None), (NEWER, source_with_version(folder / "newer-src", NEWER))):
        out = folder / version
        out.mkdir()
        pyz = out / build.PYZ_NAME
        build.build_zipapp(pyz, src)
        found[version] = {"pyz": pyz, "deb": build.build_deb(out, pyz, src)}
    return found


@pytest.fixture
def package():
    if os.geteuid() != 0:
        pytest.fail("installing the .deb needs root (the test machine runs the suite as root)")
    if installed() or any(os.path.lexists(path) for path in LEFT_BEHIND) or user_exists("backup-agent"):
        pytest.fail("backup-agent is already on this machine: this test installs and purges its own copy")
    try:
        yield
    finally:
        dpkg("--purge", "backup-agent")


@pytest.fixture
def serve_deb(settings, tmp_path, live_server):
    settings.PORTAL_BASE_URL = live_server.url
    folder = tmp_path / "portal-agent"
    folder.mkdir()
    settings.PORTAL_AGENT_DIST_DIR = folder

    def serve(
        built: dict[str, Path], version: str, *, published: str | None = None, published_deb: str = ""
    ) -> None:
        shutil.copyfile(built["pyz"], folder / build.PYZ_NAME)
        shutil.copyfile(built["deb"], folder / build.deb_name(version))
        sha = published or build.sha256_of(built["pyz"])
        manifest = {"source": artifacts.source_digest(), "version": version}
        manifest.update(pyz_sha256=sha, deb_for=sha)
        if published_deb:
            manifest["deb_sha256"] = published_deb  # otherwise computed from the file (artifacts)
        (folder / artifacts.MANIFEST).write_text(json.dumps(manifest))

    return serve


def configure(server: str) -> None:
    config = {"server": server, "agent_token": "bpa_unused", "hostname": "deb01.example.com"}
    Path("/etc/backup-agent/config.json").write_text(json.dumps(config))
    os.chmod("/etc/backup-agent/config.json", 0o600)


def agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/usr/bin/backup-agent", *args], capture_output=True, text=True, env={"PATH": PATH}, timeout=300
    )


def package_version() -> str:
    return dpkg("-s", "backup-agent").stdout.split("Version: ", 1)[1].split("\n", 1)[0]


def test_the_package_upgrades_with_dpkg_verified(package, debs, serve_deb, live_server):
    assert dpkg("-i", str(debs[CURRENT]["deb"])).returncode == 0
    configure(live_server.url)

    # A package whose zipapp is not the published one is refused: nothing changes.
    serve_deb(debs[NEWER], NEWER, published="0" * 64)
    refused = agent("upgrade")
    assert refused.returncode == 1 and "the portal publishes " + "0" * 64 in refused.stderr
    assert package_version() == CURRENT
    # Its zipapp is the published one, but the package as a whole is not (maintainer scripts run as root).
    serve_deb(debs[NEWER], NEWER, published_deb="0" * 64)
    refused = agent("upgrade")
    assert refused.returncode == 1 and "the package's SHA-256 is" in refused.stderr
    assert "the portal publishes " + "0" * 64 in refused.stderr and package_version() == CURRENT

    serve_deb(debs[NEWER], NEWER)
    done = agent("upgrade")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"backup-agent {CURRENT} -> {NEWER}" in done.stdout
    assert package_version() == NEWER and installed()
    assert agent("--version").stdout.strip() == f"backup-agent {NEWER}"
    # The config survives the upgrade (a conffile-free package: dpkg leaves /etc/backup-agent alone).
    assert json.loads(Path("/etc/backup-agent/config.json").read_text())["server"] == live_server.url

    # Back: a downgrade only when forced.
    serve_deb(debs[CURRENT], CURRENT)
    assert "refusing a downgrade" in agent("upgrade").stderr and package_version() == NEWER
    forced = agent("upgrade", "--force")
    assert forced.returncode == 0, forced.stderr
    assert package_version() == CURRENT
