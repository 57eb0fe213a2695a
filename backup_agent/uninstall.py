"""`backup-agent uninstall`: remove what install.sh installed, keep unsent reports, never touch backups.

What install.sh (agent_dist/install.sh.in) puts on a server, and what this removes:

    /etc/systemd/system/backup-agent.service   the unit (stopped and disabled first)
    /usr/local/lib/backup-agent/backup-agent.pyz   the agent
    /usr/local/bin/backup-agent                the link to it
    /etc/backup-agent/                         the config: the agent's token, the allow-list
    /var/lib/backup-agent/                     the report spool, this host's instance id, staging

Only these, and only when they are install.sh's (the unit runs /usr/local/bin/backup-agent, the
link points at the zipapp). A spool folder the config names elsewhere (`enrol --spool-dir`) is
never removed whole: only the spool's own files (`<job id>.json`, `.bad`, their temporary files,
backup_agent/spool.py) go, and the folder only if nothing else is left in it. A state folder
elsewhere is kept (the run says so). An agent installed from the .deb is removed by `apt purge backup-agent`;
one installed with pip by `pip uninstall backup-agent` and the administrator's own files.

The report spool holds finished jobs' reports the portal has not acknowledged: the catalog would
never learn about those backups. They are sent once more first; whatever is still unsent is kept
with what sending it needs (the agent, its config, the spool), and the run says so: run it again
later, or drop them with ``--discard-spool``. Backups on protection storage are never touched:
nothing under a storage root of the allow-list is removed, whatever the layout.

The same overrides as install.sh, for tests and packaging: BACKUP_AGENT_PREFIX (a root other than
/), BACKUP_AGENT_NO_SYSTEMD=1 (no systemctl), BACKUP_AGENT_SYSTEMD_RUN_DIR (instead of
/run/systemd/system, the sign that systemd runs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from backup_agent.config import CONFIG_ENV, Config, load
from backup_agent.errors import ConfigError
from backup_agent.layout import LOCAL_BIN, LOCAL_LINK_TARGET, UNIT_NAME, Layout, layout_from_env
from backup_agent.layout import systemctl as layout_systemctl
from backup_agent.spool import Spool

#: How install.sh's unit starts the agent (deploy/systemd/backup-agent.service); the .deb's runs /usr/bin.
UNIT_EXEC = f"ExecStart={LOCAL_BIN} run"
#: The files backup_agent/spool.py writes: a report, one parked as unreadable, a report being written.
SPOOL_FILE = re.compile(r"\d+\.json|\d+\.bad|\.\d+\.json\.tmp-[0-9a-f]+")


@dataclass
class Outcome:
    """What a run did, for the command's output and its exit status."""

    lines: list[str] = field(default_factory=list)
    exit_code: int = 0

    def say(self, line: str) -> None:
        self.lines.append(line)


class UninstallError(Exception):
    """Refused: not root, or installed some other way (the message says what to do)."""


def uninstall(
    *,
    config_file: str | None = None,
    dry_run: bool = False,
    discard_spool: bool = False,
    layout: Layout | None = None,
    environ: dict[str, str] | None = None,
) -> Outcome:
    env = dict(os.environ if environ is None else environ)
    layout = layout or layout_from_env(env)
    out = Outcome()
    if not layout.prefix and hasattr(os, "geteuid") and os.geteuid() != 0:
        raise UninstallError("run this as root (sudo backup-agent uninstall): it removes a system service")
    if any(marker.exists() for marker in layout.deb_markers):
        raise UninstallError(
            "this agent was installed from the Debian package: remove it with `apt purge backup-agent` "
            "(it stops the service and removes the agent, its config and its state; backups on storage "
            "are not touched). Nothing was removed."
        )
    config_path = Path(config_file or env.get(CONFIG_ENV) or layout.config_dir / "config.json")
    config = _load(config_path)
    spool_dir = Path(config.spool_dir) if config else layout.state_dir / "spool"
    state_dir = config.state_path if config else layout.state_dir
    storage = [Path(root) for root in config.allow.storage] if config else []

    unit = layout.unit if _ours_unit(layout.unit) else None
    link = layout.bin if _ours_link(layout.bin) else None
    program = [path for path in (link, layout.pyz) if path is not None and path.exists()]
    # install.sh's folders whole; a config elsewhere (enrolled by hand) only itself; a spool
    # elsewhere only its own files (the folder may be /var/spool or /srv: never removed whole).
    config_dirs = _outermost(
        [path for path in (layout.config_dir, config_path) if path == layout.config_dir or path.is_file()]
    )
    config_dirs = [path for path in config_dirs if path.exists()]
    state_dirs = [layout.state_dir] if layout.state_dir.exists() else []
    inside = spool_dir.absolute().is_relative_to(layout.state_dir.absolute())
    foreign_spool = spool_dir if spool_dir.is_dir() and not inside else None
    if foreign_spool is not None and _touches_storage(foreign_spool, storage):
        out.say(f"note: the spool {foreign_spool} is or holds or lies in a storage root: kept as it is")
        foreign_spool = None
    if state_dir.exists() and not state_dir.absolute().is_relative_to(layout.state_dir.absolute()):
        out.say(f"note: {state_dir} (this host's state, not install.sh's folder) is kept: remove it yourself")
    for path in (*config_dirs, *state_dirs):
        if _touches_storage(path, storage):
            raise UninstallError(
                f"{path} is, holds or lies in a storage root of the allow-list: it is not removed "
                "(backups on storage are never touched). Nothing was removed."
            )
    if unit is None and not program and not config_dirs and not state_dirs and foreign_spool is None:
        out.say("nothing left to remove: backup-agent is not installed here (install.sh's layout)")
        return out

    pending = Spool(spool_dir).pending()
    if dry_run:
        out.say("dry run: nothing is changed. `backup-agent uninstall` would:")
        if unit is not None:
            out.say(f"  stop and disable {UNIT_NAME} and remove {unit}")
        for path in (*program, *config_dirs, *state_dirs):
            out.say(f"  remove {path}")
        if foreign_spool is not None:
            out.say(
                f"  remove the spool's own files in {foreign_spool} (and the folder only if nothing else "
                "is in it)"
            )
        if pending:
            out.say(
                f"  first send the {len(pending)} unsent report(s) in {spool_dir}; if some cannot be sent, "
                "keep them, the agent and its config (or drop them with --discard-spool)"
            )
        out.say(_storage_line(storage))
        return out

    if unit is not None:
        _stop_service(unit, env, out)
    if pending and not discard_spool:
        remaining = _flush(config, spool_dir, out)
        stopped = " The service is stopped and removed." if unit is not None else ""
        if remaining:
            out.say(
                f"{remaining} report(s) could not be sent to the portal: kept in {spool_dir}, with the agent "
                f"and its config ({config_path}) needed to send them.{stopped} Run "
                "`backup-agent uninstall` again when the portal is reachable, or "
                "`backup-agent uninstall --discard-spool` to drop them (the portal then never learns "
                "about those jobs; a revoked agent's reports are refused for good)."
            )
            out.say(_storage_line(storage))
            out.exit_code = 1
            return out
    elif pending:
        out.say(f"dropped {len(pending)} unsent report(s) (--discard-spool)")
    for path in program:
        _remove(path, out)
    if layout.lib_dir.is_dir() and not any(layout.lib_dir.iterdir()):
        layout.lib_dir.rmdir()
    for path in (*config_dirs, *state_dirs):
        _remove(path, out)
    if foreign_spool is not None:
        _remove_spool_files(foreign_spool, out)
    out.say("backup-agent is uninstalled")
    out.say(_storage_line(storage))
    return out


def _load(path: Path) -> Config | None:
    if not path.exists():
        return None
    try:
        return load(path)
    except ConfigError:
        return None  # unreadable: removed all the same; its spool cannot be sent


def _ours_unit(path: Path) -> bool:
    try:
        return UNIT_EXEC in path.read_text(encoding="utf-8")
    except OSError:
        return False


def _ours_link(path: Path) -> bool:
    return path.is_symlink() and os.readlink(path) == LOCAL_LINK_TARGET


def _outermost(paths: list[Path]) -> list[Path]:
    """The paths not inside another of them, sorted."""
    resolved = sorted({path.absolute() for path in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in resolved:
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return sorted(kept)


def _touches_storage(path: Path, storage: list[Path]) -> bool:
    real = Path(os.path.realpath(path))
    for root in storage:
        root_real = Path(os.path.realpath(root))
        if real.is_relative_to(root_real) or root_real.is_relative_to(real):
            return True
    return False


def _stop_service(unit: Path, env: dict[str, str], out: Outcome) -> None:
    systemctl = layout_systemctl(env)
    if systemctl:
        done = subprocess.run(  # noqa: S603 - a fixed command
            [systemctl, "disable", "--now", UNIT_NAME], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            out.say(f"stopped and disabled {UNIT_NAME}")
        else:
            why = done.stderr.strip() or f"exit {done.returncode}"
            out.say(f"note: systemctl disable --now {UNIT_NAME} failed: {why}")
    _remove(unit, out)
    if systemctl:
        subprocess.run([systemctl, "daemon-reload"], env=env, capture_output=True, check=False)  # noqa: S603


def _flush(config: Config | None, spool_dir: Path, out: Outcome) -> int:
    """Send the spool once, as the running agent would; how many reports are still unsent."""
    pending = len(Spool(spool_dir).pending())
    if config is None:
        out.say(f"{pending} unsent report(s) in {spool_dir}, but no config to send them with")
        return pending
    from backup_agent.runner import Agent

    out.say(f"sending {pending} unsent report(s) to {config.server} before removing the spool")
    Agent(config).resend_spool()
    remaining = len(Spool(spool_dir).pending())
    if remaining < pending:
        out.say(f"sent {pending - remaining} report(s)")
    return remaining


def _remove(path: Path, out: Outcome) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        return
    out.say(f"removed {path}")


def _remove_spool_files(folder: Path, out: Outcome) -> None:
    """Only what the spool wrote in a folder install.sh did not make; the folder only if then empty."""
    removed = 0
    for path in folder.iterdir():
        if SPOOL_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink()
            removed += 1
    if removed:
        out.say(f"removed {removed} spool file(s) from {folder}")
    if any(folder.iterdir()):
        out.say(f"note: {folder} holds other files than the spool's: it is kept")
    else:
        folder.rmdir()
        out.say(f"removed {folder}")


def _storage_line(storage: list[Path]) -> str:
    where = f" ({', '.join(str(root) for root in storage)})" if storage else ""
    return f"backups on protection storage{where} are not touched"
