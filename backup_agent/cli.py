"""Command line: `backup-agent enrol | run | status | allow | deny | policy | upgrade | uninstall`.

Exit codes: 0 success; 1 a job report or poll did not reach the portal (it
stays spooled); 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from backup_agent import __version__, plugins
from backup_agent.allow import FLAGS, KEYS, AllowList, checked
from backup_agent.client import PortalClient
from backup_agent.config import DEFAULT_SPOOL_DIR, Config, config_path, load, write_private
from backup_agent.errors import ConfigError, PortalError, PortalUnreachable
from backup_agent.memory import keep_freed_memory
from backup_agent.runner import Agent
from backup_agent.spool import Spool
from backup_agent.state import instance_of

log = logging.getLogger("backup_agent")

# The allow-list flags: `enrol` spells them --allow-path …, `allow`/`deny` --path ….
ENROL_FLAGS = {
    "paths": "--allow-path",
    "restore_roots": "--restore-root",
    "commands": "--allow-command",
    "databases": "--allow-database",
    "storage": "--allow-storage",
}
EDIT_FLAGS = {key: f"--{FLAGS[key]}" for key in KEYS}
AUTO_UPGRADE_HELP = (
    "let the agent install the portal's newer agent by itself when the backup team switches automatic "
    "upgrades on (checked against the portal's SHA-256, between jobs, as the systemd service)"
)
ALLOW_HELP = {
    "paths": "files: backups may read this path; in-place restores may write under it",
    "restore_roots": "files: restores may write new copies into this folder",
    "commands": "command: the plugin may run this program (absolute path, matched exactly)",
    "databases": "postgresql:NAME or mysql:NAME; NAME may be a pattern such as orders_*",
    "storage": "backups may be written to and read from this storage root",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backup-agent", description="Backup Portal agent.")
    parser.add_argument("--version", action="version", version=f"backup-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    enrol = commands.add_parser("enrol", help="register this server with the portal and write the config")
    enrol.add_argument("--server", required=True, help="portal URL, e.g. https://backup.example.com")
    enrol.add_argument("--token", required=True, help="one-time enrolment token from the portal")
    enrol.add_argument("--hostname", default=None, help="name to enrol under (default: the FQDN)")
    enrol.add_argument(
        "--spool-dir", default=DEFAULT_SPOOL_DIR, help=f"report spool folder (default {DEFAULT_SPOOL_DIR})"
    )
    enrol.add_argument(
        "--state-dir",
        default=None,
        help="this host's own state: instance id, staging and archives (default: the spool folder's parent)",
    )
    enrol.add_argument("--ca-file", default=None, help="CA bundle to trust for the portal's certificate")
    enrol.add_argument("--force", action="store_true", help="replace an existing config file")
    enrol.add_argument("--allow-auto-upgrade", action="store_true", help=AUTO_UPGRADE_HELP)
    _allow_args(enrol, ENROL_FLAGS)
    _config_arg(enrol)

    run = commands.add_parser("run", help="poll the portal and run jobs")
    run.add_argument("--once", action="store_true", help="resend the spool, poll once, run the jobs, exit")
    _config_arg(run)

    status = commands.add_parser("status", help="show the configuration and the report spool")
    _config_arg(status)

    allow = commands.add_parser("allow", help="add entries to this server's allow-list")
    _allow_args(allow, EDIT_FLAGS)
    allow.add_argument("--auto-upgrade", action="store_true", help=AUTO_UPGRADE_HELP)
    _config_arg(allow)
    deny = commands.add_parser("deny", help="remove entries from this server's allow-list")
    _allow_args(deny, EDIT_FLAGS)
    deny.add_argument("--auto-upgrade", action="store_true", help="no automatic upgrades any more")
    _config_arg(deny)
    policy = commands.add_parser("policy", help="show what the portal may ask of this server")
    policy.add_argument("--json", action="store_true", help="print the allow-list as JSON")
    _config_arg(policy)
    upgrade = commands.add_parser(
        "upgrade", help="install the portal's current agent (verified), then restart the service"
    )
    upgrade.add_argument("--force", action="store_true", help="install it even if it is older (a downgrade)")
    upgrade.add_argument(
        "--when-idle", action="store_true", help="wait for the running jobs to finish instead of refusing"
    )
    _config_arg(upgrade)
    uninstall = commands.add_parser(
        "uninstall",
        help="stop and remove the service, the agent and its config (install.sh's); unsent reports are "
        "sent first or kept; backups on storage are never touched",
    )
    uninstall.add_argument("--dry-run", action="store_true", help="list what would go; change nothing")
    uninstall.add_argument(
        "--discard-spool", action="store_true", help="drop unsent job reports instead of keeping them"
    )
    _config_arg(uninstall)
    return parser


def _allow_args(parser: argparse.ArgumentParser, flags: dict[str, str]) -> None:
    for key, flag in flags.items():
        metavars = {"databases": "PLUGIN:NAME[@HOST[:PORT]]", "commands": "PROGRAM"}
        metavar = metavars.get(key, "PATH")
        parser.add_argument(
            flag,
            dest=key,
            action="append",
            default=None,
            metavar=metavar,
            help=ALLOW_HELP[key] + " (repeatable)",
        )


def _allow_list_from(args: argparse.Namespace, flags: dict[str, str]) -> AllowList:
    """The allow-list the flags name, validated like the config file's; ConfigError names the flag."""
    values: dict[str, tuple[str, ...]] = {}
    for key, flag in flags.items():
        try:
            values[key] = checked(key, getattr(args, key) or [])
        except ValueError as exc:
            raise ConfigError(f"{flag} {exc}") from None
    return AllowList(**values)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="config file (default $BACKUP_AGENT_CONFIG or /etc/backup-agent/config.json)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(COMMANDS[args.command](args))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2


def cmd_enrol(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    if path.exists() and not args.force:
        log.error("%s exists: this server is already enrolled (use --force to replace it)", path)
        return 2
    # Checked before the portal is called: a typo must not use up the one-time token.
    allow = _allow_list_from(args, ENROL_FLAGS)
    hostname = args.hostname or socket.getfqdn()
    spool = Spool(args.spool_dir)
    try:
        spool.ensure()  # fail now, not at the first finished backup
    except OSError as exc:
        raise ConfigError(f"cannot create spool folder {args.spool_dir}: {exc.strerror}") from None
    state_dir = Path(args.state_dir).absolute() if args.state_dir else Path(args.spool_dir).absolute().parent
    try:
        # This host's identity: kept (not replaced) by a re-enrolment with --force.
        instance = instance_of(state_dir)
    except OSError as exc:
        raise ConfigError(f"cannot create the instance id in {state_dir}: {exc.strerror}") from None
    client = PortalClient(args.server, ca_file=args.ca_file)
    try:
        answer = client.enrol(args.token, hostname, plugins.available(), instance)
    except PortalError as exc:
        log.error("enrolment refused: %s", exc)
        return 1
    except PortalUnreachable as exc:
        log.error("portal unreachable: %s", exc)
        return 1
    token = answer.get("agent_token")
    if not isinstance(token, str) or not token:
        log.error("the portal's answer holds no agent token")
        return 1
    config = Config(
        server=args.server.rstrip("/"),
        agent_token=token,
        hostname=str(answer.get("hostname") or hostname),
        agent_id=answer.get("agent_id") if isinstance(answer.get("agent_id"), int) else None,
        spool_dir=str(Path(args.spool_dir).absolute()),
        state_dir=str(state_dir) if args.state_dir else None,
        poll_after=int(answer.get("poll_after") or 30),
        ca_file=args.ca_file,
        allow=allow,
        auto_upgrade=args.allow_auto_upgrade,
    )
    write_private(path, config)
    print(f"enrolled {config.hostname} as agent {config.agent_id}; config written to {path}")
    if allow.is_empty():
        print("the allow-list is empty: every job will be refused until you run 'backup-agent allow …'")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = load(path)
    keep_freed_memory()
    agent = Agent(config, config_file=path)
    if args.once:
        return agent.run_once()

    def stop(signum: int, frame: FrameType | None) -> None:
        agent.request_stop(f"received {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("backup-agent %s polling %s as %s", __version__, config.server, config.hostname)
    return agent.run_forever()


def cmd_status(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = load(path)
    print(f"backup-agent {__version__}")
    print(f"config:      {path}")
    print(f"server:      {config.server}")
    print(f"hostname:    {config.hostname} (agent {config.agent_id})")
    print("token:       set (not shown)")
    print(f"plugins:     {', '.join(plugins.available(config.plugin_env)) or 'none'}")
    entries = sum(len(getattr(config.allow, key)) for key in KEYS)
    print(f"allow-list:  {entries} entr{'y' if entries == 1 else 'ies'} (backup-agent policy)")
    id_file = config.state_path / "instance-id"
    try:
        instance_id = id_file.read_text(encoding="ascii").strip() or "(empty)"
    except OSError:
        instance_id = "(none yet: created at the first run)"
    print(f"instance:    {instance_id} ({id_file})")
    pending = Spool(config.spool_dir).pending()
    print(f"spool:       {config.spool_dir} ({len(pending)} report(s) not yet acknowledged)")
    for entry in pending:
        age = time.time() - entry.spooled_at
        print(f"  job {entry.job_id}: {entry.report.get('status')}, spooled {age:.0f}s ago")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    """backup_agent/upgrade.py: download, verify, swap atomically, restart; never during a job."""
    from backup_agent import upgrade

    config = load(config_path(args.config))
    try:
        # Always restarted: a running agent whose zipapp was replaced under it breaks at its next
        # import (zipimport reads the new file at the old offsets); there is no --no-restart.
        result = upgrade.upgrade(config, force=args.force, when_idle=args.when_idle)
    except upgrade.UpgradeError as exc:
        log.error("upgrade refused: %s", exc)
        return 1
    if not result.replaced:
        print(f"backup-agent {result.old} is the version the portal ships: nothing to do")
        return 0
    print(f"backup-agent {result.old} -> {result.new}: {result.path} replaced (SHA-256 verified)")
    if result.restarted:
        print("the backup-agent service was restarted (if it was running)")
    else:
        print("restart the agent (backup-agent run) to run the new version")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    """backup_agent/uninstall.py: what install.sh installed goes; unsent reports and backups stay."""
    from backup_agent import uninstall

    try:
        outcome = uninstall.uninstall(
            config_file=args.config, dry_run=args.dry_run, discard_spool=args.discard_spool
        )
    except uninstall.UninstallError as exc:
        log.error("%s", exc)
        return 2
    for line in outcome.lines:
        print(line)
    return outcome.exit_code


def cmd_allow(args: argparse.Namespace) -> int:
    return _edit_allow_list(args, add=True)


def cmd_deny(args: argparse.Namespace) -> int:
    return _edit_allow_list(args, add=False)


def _edit_allow_list(args: argparse.Namespace, *, add: bool) -> int:
    """Add or remove entries and rewrite the config (0600, atomically); a running agent reads it per job."""
    path = config_path(args.config)
    config = load(path)
    change = _allow_list_from(args, EDIT_FLAGS)
    auto_upgrade = config.auto_upgrade
    if args.auto_upgrade:
        auto_upgrade = add
        print(f"automatic upgrades {'allowed' if add else 'not allowed'} on this server")
    if change.is_empty() and not args.auto_upgrade:
        log.error("name at least one entry, e.g. --path /srv/app (see --help)")
        return 2
    if add:
        allow = config.allow.added(change)
        for entry in (*change.paths, *change.restore_roots, *change.storage):
            real = os.path.realpath(entry)
            if real != entry:
                # Jobs' paths are resolved before they are compared; the entry is not.
                print(f"note: {entry} resolves to {real}; jobs reaching it through symlinks need {real}")
    else:
        for key in KEYS:
            for entry in getattr(change, key):
                if entry not in getattr(config.allow, key):
                    print(f"note: {FLAGS[key]} {entry} was not in the allow-list")
        allow = config.allow.removed(change)
    write_private(path, dataclasses.replace(config, allow=allow, auto_upgrade=auto_upgrade))
    print(f"allow-list written to {path}; a running agent applies it from its next job")
    print_allow_list(allow)
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    allow = load(path).allow
    if args.json:
        print(json.dumps(allow.to_json(), indent=2))
        return 0
    print(f"allow-list of this server ({path}):")
    print_allow_list(allow)
    return 0


POLICY_TITLES = {
    "paths": "paths: files backups may read these; in-place restores may write only under them",
    "restore_roots": "restore roots: files restores may write new copies into these",
    "commands": "commands: the command plugin may run these programs",
    "databases": "databases: backups of and restores into these (NAME may be a pattern)",
    "storage": "storage: backups may be written to and read from these roots",
}


def print_allow_list(allow: AllowList) -> None:
    if allow.is_empty():
        print("nothing is allowed: every job is refused")
    for key in KEYS:
        print(POLICY_TITLES[key])
        for entry in getattr(allow, key) or ("(none)",):
            print(f"  {entry}")


COMMANDS = {
    "enrol": cmd_enrol,
    "run": cmd_run,
    "status": cmd_status,
    "allow": cmd_allow,
    "deny": cmd_deny,
    "policy": cmd_policy,
    "upgrade": cmd_upgrade,
    "uninstall": cmd_uninstall,
}
