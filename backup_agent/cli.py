"""Command line: `backup-agent enrol | run | status`.

Exit codes: 0 success; 1 a job report or poll did not reach the portal (it
stays spooled); 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from backup_agent import __version__, plugins
from backup_agent.client import PortalClient
from backup_agent.config import DEFAULT_SPOOL_DIR, Config, config_path, load, write_private
from backup_agent.errors import ConfigError, PortalError, PortalUnreachable
from backup_agent.runner import Agent
from backup_agent.spool import Spool

log = logging.getLogger("backup_agent")


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
    enrol.add_argument("--ca-file", default=None, help="CA bundle to trust for the portal's certificate")
    enrol.add_argument("--force", action="store_true", help="replace an existing config file")
    _config_arg(enrol)

    run = commands.add_parser("run", help="poll the portal and run jobs")
    run.add_argument("--once", action="store_true", help="resend the spool, poll once, run the jobs, exit")
    _config_arg(run)

    status = commands.add_parser("status", help="show the configuration and the report spool")
    _config_arg(status)
    return parser


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
    hostname = args.hostname or socket.getfqdn()
    spool = Spool(args.spool_dir)
    try:
        spool.ensure()  # fail now, not at the first finished backup
    except OSError as exc:
        raise ConfigError(f"cannot create spool folder {args.spool_dir}: {exc.strerror}") from None
    client = PortalClient(args.server, ca_file=args.ca_file)
    try:
        answer = client.enrol(args.token, hostname, plugins.available())
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
        poll_after=int(answer.get("poll_after") or 30),
        ca_file=args.ca_file,
    )
    write_private(path, config)
    print(f"enrolled {config.hostname} as agent {config.agent_id}; config written to {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = load(config_path(args.config))
    agent = Agent(config)
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
    pending = Spool(config.spool_dir).pending()
    print(f"spool:       {config.spool_dir} ({len(pending)} report(s) not yet acknowledged)")
    for entry in pending:
        age = time.time() - entry.spooled_at
        print(f"  job {entry.job_id}: {entry.report.get('status')}, spooled {age:.0f}s ago")
    return 0


COMMANDS = {"enrol": cmd_enrol, "run": cmd_run, "status": cmd_status}
