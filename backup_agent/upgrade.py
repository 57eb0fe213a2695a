"""`backup-agent upgrade`: the portal's zipapp, verified, swapped in atomically, the service restarted.

The portal serves the agent it ships at /agent/backup-agent.pyz and its SHA-256 at
/agent/backup-agent.pyz.sha256 (docs/agent.md, "Upgrading"). Both are fetched from the
configured portal with the client's TLS settings (its CA file); the download is checked
against the checksum and run once (`--version`) before anything on the host changes, written
beside the running zipapp, fsynced and renamed over it, so the host has the old agent or the
new one, never half of one. A downgrade is refused unless forced.

A job is never interrupted: the runner holds ``jobs.lock`` in the state folder (shared) from a
job's claim until its report is sent or spooled; the swap and the restart take it exclusively,
at once (or refuse: "a job is running") or, with --when-idle, as soon as the jobs are done.

A zipapp installed from the Debian package is upgraded with dpkg instead: the portal's .deb,
once the whole file has the SHA-256 the portal publishes for it (/agent/backup-agent.deb.sha256)
and the zipapp inside it the zipapp's (its postinst restarts the service). A wheel (pip, pipx)
belongs to the tool that installed it, and is left to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from backup_agent import __version__
from backup_agent.client import PortalClient
from backup_agent.config import Config
from backup_agent.errors import PortalError, PortalUnreachable
from backup_agent.layout import DEB_PYZ, DPKG_LIST, NO_SYSTEMD_ENV, SYSTEMD_RUN_DIR, UNIT_NAME, systemctl

log = logging.getLogger(__name__)

PYZ_PATH = "/agent/backup-agent.pyz"
DEB_PATH = "/agent/backup-agent.deb"
SHA256_PATH = PYZ_PATH + ".sha256"
DEB_SHA256_PATH = DEB_PATH + ".sha256"
MAX_DOWNLOAD = 64 * 1024 * 1024
SERVICE = UNIT_NAME
JOB_LOCK = "jobs.lock"
# The exit status of `backup-agent run` after an automatic upgrade (EX_TEMPFAIL: "try again"): the
# unit's RestartForceExitStatus=75 starts the new version, SuccessExitStatus=75 keeps it from
# counting as a failure (deploy/systemd/backup-agent.service).
RESTART_EXIT = 75
# Set by systemd for every unit it starts: the agent runs as the service, which restarts it.
INVOCATION_ENV = "INVOCATION_ID"
# Told to the package's postinst by `_upgrade_deb`: this process holds jobs.lock around `dpkg -i`.
LOCK_HELD_ENV = "BACKUP_AGENT_JOB_LOCK_HELD"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^backup-agent (\S+)$")
WAIT_STEP = 0.5


class UpgradeError(Exception):
    """The upgrade did not happen; the message says why (and nothing on the host changed)."""


class JobRunning(UpgradeError):
    pass


@dataclass(frozen=True)
class Result:
    path: Path
    old: str
    new: str
    replaced: bool
    restarted: bool = False


def version_key(version: str) -> tuple[int, ...]:
    """ "4.0.1" → (4, 0, 1), as the portal compares them (catalog/agent_versions.py)."""
    found = re.match(r"\d+(?:\.\d+)*", version.strip())
    parts = [int(p) for p in found.group(0).split(".")] if found else []
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def check_version(new: str, *, force: bool) -> bool:
    """Whether ``new`` is to be installed over this agent: False when it is this version (nothing to
    do); UpgradeError for an older one unless ``force``."""
    if force:
        return True
    if version_key(new) == version_key(__version__):
        log.info("backup-agent %s is the portal's version already; nothing to do", __version__)
        return False
    if version_key(new) < version_key(__version__):
        raise UpgradeError(
            f"the portal ships backup-agent {new}, older than this one ({__version__}): "
            "refusing a downgrade (--force installs it anyway)"
        )
    return True


def under_systemd(environ: dict[str, str] | None = None) -> bool:
    """This process is a systemd service (INVOCATION_ID set): an exit with RESTART_EXIT restarts it."""
    env = os.environ if environ is None else environ
    return bool(env.get(INVOCATION_ENV)) and env.get(NO_SYSTEMD_ENV) != "1"


#: Why an agent whose server's admin did not opt in never upgrades itself (config.auto_upgrade).
NOT_ALLOWED_HERE = (
    "this server's administrator has not allowed automatic upgrades (`backup-agent allow "
    "--auto-upgrade` does): run `sudo backup-agent upgrade` on this server"
)


def automatic_blocker(target: Path | None = None, environ: dict[str, str] | None = None) -> str | None:
    """Why the running agent cannot upgrade itself (what to run instead), or None when it can."""
    target = target or running_zipapp()
    if target is None:
        return "this agent was installed by pip or pipx: pip install --upgrade backup-agent"
    if managed_by_dpkg(target):
        return (
            f"{target} belongs to the Debian package, which dpkg upgrades, not the running service: "
            "run `sudo backup-agent upgrade` on this server"
        )
    if not under_systemd(environ):
        return (
            "this agent does not run as the systemd service, which would start the new version: "
            "run `sudo backup-agent upgrade` on this server, then restart the agent"
        )
    return None


def running_zipapp() -> Path | None:
    """The zipapp this code runs from, its real path (/usr/local/bin/backup-agent is a symlink); or None."""
    for parent in Path(__file__).parents:
        if parent.is_file():
            return Path(os.path.realpath(parent))
    return None


def managed_by_dpkg(path: Path) -> bool:
    if str(path) == DEB_PYZ:
        return True
    try:
        with open(DPKG_LIST, encoding="utf-8") as listing:
            return any(line.rstrip("\n") == str(path) for line in listing)
    except OSError:
        return False


# --- the job lock ------------------------------------------------------------------


def _open_lock(state_dir: Path) -> int:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(state_dir / JOB_LOCK, os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def job_running(state_dir: Path, stop: threading.Event | None = None) -> Iterator[None]:
    """Held (shared) by the runner for each job: an upgrade waits for it or refuses.

    Waits while an upgrade holds the lock (a second or two, a restart included); gives up
    waiting when ``stop`` is set (the agent is stopping, the job is cancelled anyway). A lock
    that cannot be opened never stops a job.
    """
    try:
        fd = _open_lock(state_dir)
    except OSError as exc:
        log.warning("cannot open %s: %s; upgrades will not see this job", state_dir / JOB_LOCK, exc)
        yield
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop is not None and stop.is_set():
                    break
                time.sleep(WAIT_STEP)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def idle(state_dir: Path, *, wait: bool, log_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """No job runs (and none starts) inside: the exclusive side of ``job_running``."""
    try:
        fd = _open_lock(state_dir)
    except OSError as exc:
        raise UpgradeError(
            f"cannot take the job lock {state_dir / JOB_LOCK} ({exc.strerror or exc}): run it as the "
            "agent's user (root); nothing changed"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise JobRunning("a job is running; try again or use --when-idle") from None
            if log_wait:
                log_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- the upgrade -------------------------------------------------------------------


def restart_service() -> bool:
    """`systemctl try-restart backup-agent` (restarts it only if it runs); False without systemd."""
    found = systemctl()
    if found is None:
        return False
    done = subprocess.run(  # noqa: S603 - a fixed command
        [found, "try-restart", SERVICE], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise UpgradeError(
            f"the new agent is installed, but `systemctl try-restart {SERVICE}` failed: "
            f"{(done.stderr or done.stdout).strip() or done.returncode}; restart the service by hand"
        )
    return True


def _expected_sha256(client: PortalClient, path: str = SHA256_PATH) -> str:
    text = client.download(path, 4096).decode("ascii", "replace")
    value = text.split()[0].lower() if text.split() else ""
    if not _SHA256.fullmatch(value):
        raise UpgradeError(f"{client.server}{path} holds no SHA-256; nothing changed")
    return value


def _download_verified(
    client: PortalClient, path: str, sha256_path: str, what: str, whose: str
) -> tuple[bytes, str]:
    """``path`` from the portal and its SHA-256, once it is the one the portal publishes (``sha256_path``)."""
    try:
        expected = _expected_sha256(client, sha256_path)
        data = client.download(path, MAX_DOWNLOAD)
    except (PortalError, PortalUnreachable) as exc:
        raise UpgradeError(f"cannot download {what} from the portal: {exc}; nothing changed") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise UpgradeError(
            f"{whose} SHA-256 is {actual}, the portal publishes {expected}: refusing it; nothing changed"
        )
    return data, actual


def _version_of(candidate: Path) -> str:
    """Run the download once: a zipapp that cannot say its version is not installed."""
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and a file we just wrote
            [sys.executable, str(candidate), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise UpgradeError(f"the downloaded agent does not run ({exc}); nothing changed") from None
    found = _VERSION.match(done.stdout.strip())
    if done.returncode != 0 or not found:
        raise UpgradeError(
            "the downloaded agent does not run on this server "
            f"({(done.stderr or done.stdout).strip()[-300:]}); nothing changed"
        )
    return found.group(1)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _log_waiting() -> None:
    log.info("a job is running: upgrading as soon as it is done (--when-idle)")


def upgrade(
    config: Config,
    *,
    force: bool = False,
    when_idle: bool = False,
    automatic: bool = False,
    target: Path | None = None,
    client: PortalClient | None = None,
) -> Result:
    """Replace the running zipapp by the portal's, verified first; UpgradeError when nothing changed.

    ``automatic``: asked by the running agent itself (the poll's ``upgrade``), which exits straight
    afterwards for systemd to restart it; otherwise the service is restarted here (always: an agent
    left running on a replaced zipapp breaks at its next import).
    """
    target = target or running_zipapp()
    if target is None:
        raise UpgradeError(
            "this backup-agent is not a zipapp: it was installed by pip or pipx (a wheel), which manage it; "
            "upgrade it with them (pip install --upgrade backup-agent), or install the portal's zipapp: "
            f"{config.server}/agent/install.sh"
        )
    client = client or PortalClient(config.server, timeout=config.http_timeout, ca_file=config.ca_file)
    if managed_by_dpkg(target):
        if automatic:
            # dpkg's postinst restarts the service: from inside it, that would kill dpkg half-way.
            raise UpgradeError(
                f"{target} belongs to the Debian package, which is upgraded by dpkg, not from inside the "
                "running service: run `sudo backup-agent upgrade` on this server"
            )
        return _upgrade_deb(config, client, force=force, when_idle=when_idle)
    data, actual = _download_verified(client, PYZ_PATH, SHA256_PATH, "the agent", "the download's")
    folder = target.parent
    candidate = folder / f".{target.name}.upgrade-{os.getpid()}"
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o755
    try:
        with os.fdopen(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(candidate)
        raise UpgradeError(f"cannot write beside {target}: {exc.strerror or exc}; nothing changed") from None
    try:
        new = _version_of(candidate)
        if not check_version(new, force=force):
            return Result(target, __version__, new, replaced=False)

        with idle(config.state_path, wait=when_idle, log_wait=_log_waiting):
            os.replace(candidate, target)
            _fsync_dir(folder)
            log.info("backup-agent %s replaced by %s in %s (SHA-256 %s)", __version__, new, target, actual)
            # Restarted under the lock: no job starts in the old agent that the restart would cut short.
            restarted = False if automatic else restart_service()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(candidate)
    return Result(target, __version__, new, replaced=True, restarted=restarted)


# --- the Debian package -------------------------------------------------------------------------


def _deb_field(dpkg_deb: str, deb: Path, field: str) -> str:
    done = subprocess.run(  # noqa: S603 - Debian's tool on a file we just wrote
        [dpkg_deb, "--field", str(deb), field], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise UpgradeError(
            f"the portal's .deb is not a Debian package ({done.stderr.strip()}); nothing changed"
        )
    return done.stdout.strip()


def _packaged_zipapp(dpkg_deb: str, deb: Path) -> bytes:
    """The zipapp inside the package: it must be the one whose SHA-256 the portal publishes."""
    done = subprocess.run(  # noqa: S603 - Debian's tool on a file we just wrote
        [dpkg_deb, "--fsys-tarfile", str(deb)], capture_output=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise UpgradeError("the portal's .deb cannot be read by dpkg-deb; nothing changed")
    try:
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
            for name in ("." + DEB_PYZ, DEB_PYZ.lstrip("/")):
                try:
                    member = archive.getmember(name)
                except KeyError:
                    continue
                handle = archive.extractfile(member)
                if handle is not None:
                    return handle.read()
    except tarfile.TarError:
        raise UpgradeError("the portal's .deb holds a damaged file system; nothing changed") from None
    raise UpgradeError(f"the portal's .deb holds no {DEB_PYZ}; nothing changed")


def _upgrade_deb(config: Config, client: PortalClient, *, force: bool, when_idle: bool) -> Result:
    """A .deb install upgrades with dpkg: the portal's package, its zipapp checked against the SHA-256.

    dpkg replaces the files, and the package's postinst restarts a running service (try-restart).
    """
    dpkg, dpkg_deb = shutil.which("dpkg"), shutil.which("dpkg-deb")
    if dpkg is None or dpkg_deb is None:
        raise UpgradeError("this agent belongs to the Debian package, but dpkg is not on the PATH")
    try:
        expected = _expected_sha256(client)
    except (PortalError, PortalUnreachable) as exc:
        raise UpgradeError(f"cannot download the package from the portal: {exc}; nothing changed") from None
    # The whole package: its maintainer scripts run as root, not only the zipapp inside it.
    data, _ = _download_verified(client, DEB_PATH, DEB_SHA256_PATH, "the package", "the package's")
    with tempfile.TemporaryDirectory(prefix="backup-agent-upgrade-") as tmp:
        deb = Path(tmp) / "backup-agent.deb"
        try:
            deb.write_bytes(data)
        except OSError as exc:
            raise UpgradeError(f"cannot write the package to {tmp}: {exc}; nothing changed") from None
        if _deb_field(dpkg_deb, deb, "Package") != "backup-agent":
            raise UpgradeError("the portal's .deb is not the backup-agent package; nothing changed")
        actual = hashlib.sha256(_packaged_zipapp(dpkg_deb, deb)).hexdigest()
        if actual != expected:
            raise UpgradeError(
                f"the package's zipapp has SHA-256 {actual}, the portal publishes {expected}: "
                "refusing it; nothing changed"
            )
        new = _deb_field(dpkg_deb, deb, "Version")
        if not check_version(new, force=force):
            return Result(Path(DEB_PYZ), __version__, new, replaced=False)

        with idle(config.state_path, wait=when_idle, log_wait=_log_waiting):
            # The postinst restarts the service once jobs.lock is free: this process holds it.
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", LOCK_HELD_ENV: "1"}
            done = subprocess.run(  # noqa: S603 - Debian's tool on the verified package
                [dpkg, "-i", str(deb)], capture_output=True, text=True, timeout=600, check=False, env=env
            )
        if done.returncode != 0:
            raise UpgradeError(f"dpkg -i failed: {(done.stderr or done.stdout).strip()[-800:]}")
    log.info("backup-agent %s replaced by %s with dpkg (SHA-256 %s)", __version__, new, actual)
    # The package's postinst restarted the service if systemd runs it.
    restarted = os.path.isdir(SYSTEMD_RUN_DIR)
    return Result(Path(DEB_PYZ), __version__, new, replaced=True, restarted=restarted)
