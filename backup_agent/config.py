"""The agent's configuration file: where it lives, what it holds, how it is written.

The file holds the long-lived agent token, so it is created with mode 0600
from the first byte (os.open with the mode, never chmod after the fact) and
replaced atomically, so a crash never leaves a half-written config behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from backup_agent.allow import AllowList
from backup_agent.errors import ConfigError
from backup_agent.fsutil import write_atomic

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = "/etc/backup-agent/config.json"
DEFAULT_SPOOL_DIR = "/var/lib/backup-agent/spool"
CONFIG_ENV = "BACKUP_AGENT_CONFIG"


@dataclass
class Config:
    """Everything the agent needs to talk to the portal and run jobs."""

    server: str
    agent_token: str
    hostname: str
    agent_id: int | None = None
    spool_dir: str = DEFAULT_SPOOL_DIR
    # This host's own state (instance id, staging record): never copied with
    # the config. None means the parent of spool_dir (/var/lib/backup-agent).
    state_dir: str | None = None
    # Where restore tests unpack files before comparing; None means the system temp dir.
    scratch_dir: str | None = None
    poll_after: int = 30
    progress_interval: float = 5.0
    max_parallel_jobs: int = 2
    # A dump that has not finished in 12 hours is stuck, not slow.
    tool_timeout: float = 12 * 3600.0
    http_timeout: float = 30.0
    # Seconds between reports of the archives this agent wrote (poll body `archives`);
    # the first poll after start always carries one.
    archive_report_interval: float = 3600.0
    ca_file: str | None = None
    # Per-plugin environment, e.g. {"postgresql": {"PGPASSWORD": "..."}}: secrets
    # live here on the server, never in client options that the portal stores.
    plugin_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # What the portal may ask of this server (backup_agent/allow.py). Set by the
    # server's admin (enrol flags, `backup-agent allow`); missing means nothing.
    allow: AllowList = field(default_factory=AllowList)
    # Whether the agent may install the portal's newer agent by itself when the portal offers it
    # (its team's switch). The server's admin decides (`--allow-auto-upgrade`, `backup-agent allow
    # --auto-upgrade`): a portal taken over must not be able to replace the code that runs as root.
    auto_upgrade: bool = False

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else Path(self.spool_dir).absolute().parent

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def config_path(cli_value: str | None) -> Path:
    """--config wins over $BACKUP_AGENT_CONFIG, which wins over the default."""
    return Path(cli_value or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


_TYPES: dict[str, tuple[type, ...]] = {
    "server": (str,),
    "agent_token": (str,),
    "hostname": (str,),
    "agent_id": (int, type(None)),
    "spool_dir": (str,),
    "state_dir": (str, type(None)),
    "scratch_dir": (str, type(None)),
    "poll_after": (int,),
    "progress_interval": (int, float),
    "max_parallel_jobs": (int,),
    "tool_timeout": (int, float),
    "http_timeout": (int, float),
    "archive_report_interval": (int, float),
    "ca_file": (str, type(None)),
    "plugin_env": (dict,),
    "allow": (dict,),
    "auto_upgrade": (bool,),
}


def parse(data: Any, source: str = "config") -> Config:
    """Build a Config from decoded JSON, rejecting unknown keys and wrong types.

    Strict on purpose: a typo such as "poll_afer" must fail loudly at start-up
    rather than silently fall back to a default.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown keys {', '.join(unknown)}")
    for key in ("server", "agent_token", "hostname"):
        if not data.get(key):
            raise ConfigError(f"{source}: '{key}' is required")
    for key, value in data.items():
        # bool is an int subclass; "poll_after": true is a mistake, not 1 (and "auto_upgrade": 1 one too).
        if isinstance(value, bool) != (bool in _TYPES[key]) or not isinstance(value, _TYPES[key]):
            raise ConfigError(f"{source}: '{key}' has the wrong type")
    for section, env in data.get("plugin_env", {}).items():
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ConfigError(f"{source}: plugin_env.{section} must map names to strings")
    allow = AllowList.from_json(data["allow"], source) if "allow" in data else AllowList()
    cfg = Config(**{**data, "allow": allow})
    if cfg.poll_after < 1 or cfg.max_parallel_jobs < 1 or cfg.progress_interval <= 0:
        raise ConfigError(f"{source}: poll_after, max_parallel_jobs and progress_interval must be positive")
    if not (0 < cfg.archive_report_interval < math.inf):  # NaN and Infinity too (Python's json reads them)
        raise ConfigError(f"{source}: archive_report_interval must be positive")
    if not cfg.server.startswith(("https://", "http://")):
        raise ConfigError(f"{source}: 'server' must be an http(s) URL")
    return cfg


def load(path: Path) -> Config:
    """Read and validate the config file; warn when others can read the token."""
    try:
        with open(path, encoding="utf-8") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            data = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run 'backup-agent enrol' first") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by other users; it holds the agent token (chmod 600)", path)
    return parse(data, str(path))


def write_private(path: Path, cfg: Config) -> None:
    """Write the config file with mode 0600, creating its folder (0700) if needed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, cfg.to_json().encode("utf-8"), mode=0o600)
