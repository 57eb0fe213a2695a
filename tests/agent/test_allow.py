"""The server's allow-list: the matcher, the config section, the CLI, and a refusal for every job kind.

A refused job must read and write nothing: no folder on storage, no target
created, no program run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shlex
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from backup_agent import plugins
from backup_agent.allow import AllowList, Permit
from backup_agent.cli import main
from backup_agent.config import Config, ConfigError, load, parse, write_private
from backup_agent.errors import RefusedByAgent
from backup_agent.executor import Executor, new_context
from backup_agent.jobs import parse as parse_job
from backup_agent.progress import Progress
from backup_agent.runner import Agent

from .conftest import PG, psql
from .fakeportal import FakePortal
from .helpers import backup_job, backup_ref, config, execute, other_job, restore_job, succeeded, tool

REPO = Path(__file__).resolve().parents[2]


def check(job: dict, allow: AllowList) -> Permit:
    """What the executor does before running anything: validate the options, then check them."""
    spec = parse_job(job)
    if spec.kind != "expire":
        spec = dataclasses.replace(spec, options=plugins.get(spec.plugin).validate(spec.options))
    return allow.check_job(spec)


def refused(job: dict, allow: AllowList) -> str:
    with pytest.raises(RefusedByAgent) as refusal:
        check(job, allow)
    return str(refusal.value)


def failed(report: dict) -> str:
    assert report["status"] == "failed", report
    assert report["error"].startswith("refused by agent: "), report["error"]
    return report["error"]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """/srv/app of a pretend server, with a file in it."""
    top = tmp_path / "srv" / "app"
    (top / "data").mkdir(parents=True)
    (top / "data" / "file.txt").write_text("payload\n")
    return top


# --- the matcher ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "allowed"),
    [
        ("srv/app", True),
        ("srv/app/", True),  # trailing slash
        ("srv/app/data/file.txt", True),
        ("srv/app/../app/data", True),
        ("srv/app2", False),  # a prefix of the name is not a parent folder
        ("srv/ap", False),
        ("srv", False),
        ("srv/app/../other", False),  # '..' is resolved before comparing
    ],
)
def test_backup_paths_must_be_an_allowed_path_or_inside_one(
    tmp_path: Path, app: Path, storage_root: Path, relative: str, allowed: bool
):
    (tmp_path / "srv" / "app2").mkdir()
    path = f"{tmp_path}/{relative}"
    allow = AllowList(paths=(str(app),), storage=(str(storage_root),))
    job = backup_job("files", {"paths": [path]}, storage_root)

    if allowed:
        assert check(job, allow) == Permit()
    else:
        real = os.path.realpath(os.path.normpath(path))
        assert refused(job, allow).endswith(f"backup-agent allow --path {real}")


def test_refusal_message_says_what_the_admin_would_run(storage_root: Path):
    job = backup_job("files", {"paths": ["/etc"]}, storage_root)
    allow = AllowList(paths=("/srv/app",), storage=(str(storage_root),))

    assert refused(job, allow) == (
        "refused by agent: /etc is not in this server's allow-list for backups; "
        "to allow it, run on the server as root: backup-agent allow --path /etc"
    )


def test_every_problem_is_named_and_one_command_allows_them_all(tmp_path: Path):
    job = backup_job("files", {"paths": ["/etc", "/root/.ssh"]}, tmp_path / "store")

    message = refused(job, AllowList())

    assert message.startswith("refused by agent: storage root ")
    assert "/etc is not in" in message and "/root/.ssh is not in" in message
    assert message.endswith(f"backup-agent allow --storage {tmp_path}/store --path /etc --path /root/.ssh")


def test_a_symlink_in_a_backup_path_cannot_escape(tmp_path: Path, app: Path, storage_root: Path):
    secrets = tmp_path / "etc"
    secrets.mkdir()
    os.symlink(secrets, app / "x")  # /srv/app/x -> /etc, planted by whoever owns /srv/app
    allow = AllowList(paths=(str(app),), storage=(str(storage_root),))

    for path in (app / "x", app / "x" / "passwd"):
        message = refused(backup_job("files", {"paths": [str(path)]}, storage_root), allow)
        real = str(secrets / path.relative_to(app / "x")).rstrip("/.")
        assert f"{path} (which resolves to {real}) is not in" in message
        assert message.endswith(f"backup-agent allow --path {real}")


def test_allowed_entries_are_normalised(storage_root: Path, app: Path):
    cfg = parse(
        {
            "server": "https://p",
            "agent_token": "t",
            "hostname": "h",
            "allow": {"paths": [f"{app}/"], "storage": [f"{storage_root}//"]},
        }
    )
    assert cfg.allow.paths == (str(app),) and cfg.allow.storage == (str(storage_root),)
    assert check(backup_job("files", {"paths": [str(app)]}, storage_root), cfg.allow) == Permit()


def test_storage_root_must_be_allowed(tmp_path: Path):
    allowed = tmp_path / "backup"
    (allowed / "nfs").mkdir(parents=True)
    os.symlink("/etc", allowed / "sneaky")
    allow = AllowList(commands=(tool("echo"),), storage=(str(allowed),))
    command = {"backup_argv": [tool("echo"), "hi"]}

    assert check(backup_job("command", command, allowed / "nfs"), allow) == Permit()
    assert check(backup_job("command", command, allowed), allow) == Permit()
    for root, real in (
        (tmp_path / "backup2", tmp_path / "backup2"),
        (Path("/etc"), Path("/etc")),
        (allowed / "sneaky", Path("/etc")),
    ):
        message = refused(backup_job("command", command, root), allow)
        assert "allow-list for storage" in message
        assert message.endswith(f"backup-agent allow --storage {real}")


@pytest.mark.parametrize(
    ("relative", "allowed"),
    [
        ("restore", True),
        ("restore/", True),
        ("restore/new/deeper", True),
        ("srv/app/data", True),  # an allowed path is also a restore target
        ("restore2", False),
        ("restore/../outside", False),
        ("restore/link/new", False),  # restore/link -> outside
        ("outside", False),
    ],
)
def test_files_restore_target_must_be_under_a_restore_root_or_an_allowed_path(
    tmp_path: Path, app: Path, storage_root: Path, relative: str, allowed: bool
):
    (tmp_path / "restore").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "restore" / "link")
    allow = AllowList(
        paths=(str(app),), restore_roots=(str(tmp_path / "restore"),), storage=(str(storage_root),)
    )
    ref = {"location": "orders/app01-data/job-1", "sha256": "0" * 64}
    for overwrite in (False, True):
        job = restore_job(
            "files", {"paths": [str(app)]}, storage_root, ref, f"{tmp_path}/{relative}", overwrite
        )
        if allowed:
            assert check(job, allow) == Permit()
        else:
            assert "allow-list for restores" in refused(job, allow)


def test_in_place_restore_over_a_folder_above_the_allowed_paths_is_limited_to_them(
    tmp_path: Path, app: Path, storage_root: Path
):
    allow = AllowList(paths=(str(app), "/elsewhere"), storage=(str(storage_root),))
    ref = {"location": "orders/app01-data/job-1", "sha256": "0" * 64}

    in_place = restore_job("files", {"paths": [str(app)]}, storage_root, ref, "/", overwrite=True)
    assert check(in_place, allow) == Permit(restore_only_under=(str(app), "/elsewhere"))
    above = restore_job("files", {"paths": [str(app)]}, storage_root, ref, str(tmp_path), overwrite=True)
    assert check(above, allow) == Permit(restore_only_under=(str(app),))

    # Without overwrite it is a restore to a new location, which "/" is not.
    new_copy = restore_job("files", {"paths": [str(app)]}, storage_root, ref, "/", overwrite=False)
    assert refused(new_copy, allow).endswith("backup-agent allow --restore-root /")


@pytest.mark.parametrize(
    ("plugin", "database", "allowed"),
    [
        ("postgresql", "orders_2024", True),
        ("postgresql", "orders_", True),
        ("postgresql", "orders", False),
        ("postgresql", "xorders_1", False),
        ("postgresql", "Orders_1", False),  # case-sensitive, like PostgreSQL's names
        ("mysql", "orders_2024", False),  # the plugin is part of the entry
        ("mysql", "shop", True),
        ("mysql", "shop2", False),
    ],
)
def test_databases_match_plugin_and_name_pattern(
    storage_root: Path, plugin: str, database: str, allowed: bool
):
    # Entries without @HOST, as before this allow-list pinned connections, for local jobs.
    allow = AllowList(databases=("postgresql:orders_*", "mysql:shop"), storage=(str(storage_root),))
    options = {"database": database}  # no host, no port: the local default connection
    ref = {"location": "orders/app01-data/job-1", "sha256": "0" * 64}
    backup = backup_job(plugin, options, storage_root)
    restore_into = restore_job(plugin, {**options, "database": "shop"}, storage_root, ref, database)

    for job, purpose in ((backup, "backups"), (restore_into, "restores")):
        if allowed:
            assert check(job, allow) == Permit()
        else:
            message = refused(job, allow)
            assert f"database {plugin}:{database} is not in this server's allow-list for {purpose}" in message
            assert message.endswith(f"backup-agent allow --database {plugin}:{database}")


ORDERS = {"database": "orders"}


@pytest.mark.parametrize(
    ("options", "entry"),
    [
        ({"host": "127.0.0.1"}, "postgresql:orders@127.0.0.1"),
        ({"host": "localhost"}, "postgresql:orders@localhost"),  # names are not resolved
        ({"host": "/var/run/postgresql"}, "postgresql:orders@/var/run/postgresql"),
        ({"host": "attacker.example.net", "port": 5432}, "postgresql:orders@attacker.example.net:5432"),
    ],
)
def test_an_entry_without_a_host_allows_only_the_local_default_connection(
    storage_root: Path, options: dict, entry: str
):
    allow = AllowList(databases=("postgresql:orders",), storage=(str(storage_root),))

    assert check(backup_job("postgresql", ORDERS, storage_root), allow) == Permit()
    message = refused(backup_job("postgresql", {**ORDERS, **options}, storage_root), allow)
    assert f"database postgresql:orders on {entry.partition('@')[2]} is not in" in message
    assert message.endswith(f"backup-agent allow --database {entry}")


def test_a_port_without_a_host_cannot_be_allowed(storage_root: Path):
    allow = AllowList(databases=("postgresql:orders",), storage=(str(storage_root),))

    message = refused(backup_job("postgresql", {**ORDERS, "port": 5433}, storage_root), allow)

    assert "database postgresql:orders cannot be allowed: port 5433 without a host" in message
    assert "to allow it" not in message  # no entry names it: the client's options must change


def test_refusal_names_the_entry_that_pins_the_jobs_connection(storage_root: Path):
    job = backup_job("postgresql", {**ORDERS, "host": "db01.example.com", "port": 5432}, storage_root)
    allow = AllowList(databases=("postgresql:orders",), storage=(str(storage_root),))

    assert refused(job, allow) == (
        "refused by agent: database postgresql:orders on db01.example.com:5432 is not in this server's "
        "allow-list for backups; to allow it, run on the server as root: "
        "backup-agent allow --database postgresql:orders@db01.example.com:5432"
    )


@pytest.mark.parametrize(
    ("entry", "connection", "fix"),
    [
        # host names: case-insensitive; the port must be the entry's
        ("postgresql:orders@db01.example.com:5432", {"host": "db01.example.com", "port": 5432}, None),
        ("postgresql:orders@db01.example.com:5432", {"host": "DB01.Example.COM", "port": 5432}, None),
        (
            "postgresql:orders@db01.example.com:5432",
            {"host": "evil.example.net", "port": 5432},
            "@evil.example.net:5432",
        ),
        (
            "postgresql:orders@db01.example.com:5432",
            {"host": "db01.example.com", "port": 5433},
            "@db01.example.com:5433",
        ),
        ("postgresql:orders@db01.example.com:5432", {"host": "db01.example.com"}, "@db01.example.com"),
        ("postgresql:orders@db01.example.com:5432", {}, ""),  # an entry with a host: not the local default
        # no PORT in the entry: the job must not set one, not even the default port
        ("postgresql:orders@db01.example.com", {"host": "db01.example.com"}, None),
        (
            "postgresql:orders@db01.example.com",
            {"host": "db01.example.com", "port": 5432},
            "@db01.example.com:5432",
        ),
        (
            "postgresql:orders@db01.example.com",
            {"host": "db01.example.com.evil.net"},
            "@db01.example.com.evil.net",
        ),
        # IPv4
        ("postgresql:orders@10.0.0.5:5432", {"host": "10.0.0.5", "port": 5432}, None),
        ("postgresql:orders@10.0.0.5:5432", {"host": "10.0.0.50", "port": 5432}, "@10.0.0.50:5432"),
        # IPv6: in brackets in the entry, with or without them in the job, compared as addresses
        ("postgresql:orders@[2001:db8::5]:5432", {"host": "2001:db8::5", "port": 5432}, None),
        ("postgresql:orders@[2001:db8::5]:5432", {"host": "[2001:DB8:0:0::5]", "port": 5432}, None),
        ("postgresql:orders@[2001:db8::5]", {"host": "::1"}, "@[::1]"),
        (
            "postgresql:orders@[2001:db8::5]:5432",
            {"host": "2001:db8::6", "port": 5432},
            "@[2001:db8::6]:5432",
        ),
        # socket folders, compared component by component, with or without a port
        ("postgresql:orders@/var/run/postgresql", {"host": "/var/run/postgresql/"}, None),
        ("postgresql:orders@/var/run/postgresql:5433", {"host": "/var/run/postgresql", "port": 5433}, None),
        ("postgresql:orders@/var/run/postgresql", {"host": "/tmp"}, "@/tmp"),
        (
            "postgresql:orders@/var/run/postgresql",
            {"host": "/var/run/postgresql/sub"},
            "@/var/run/postgresql/sub",
        ),
        ("postgresql:orders@/var/run/postgresql", {"host": "/var/run/postgresql/x/.."}, False),
        # the plugin and the name pattern still apply
        (
            "mysql:orders_*@db01.example.com:3306",
            {"host": "db01.example.com", "port": 3306},
            "@db01.example.com:3306",
        ),
        ("mysql:shop_*@db02.example.com", {"host": "db02.example.com"}, None),
    ],
)
def test_an_entry_with_a_host_pins_the_connection(storage_root: Path, entry: str, connection: dict, fix):
    plugin, _, rest = entry.partition(":")
    name = "shop_1" if rest.startswith("shop") else "orders"
    allow = AllowList(databases=(entry,), storage=(str(storage_root),))
    job = backup_job(plugin, {"database": name, **connection, "user": "backup"}, storage_root)

    if fix is None:
        assert check(job, allow) == Permit()
    elif fix is False:  # no entry could name it
        message = refused(job, allow)
        assert "cannot be allowed: host " in message and "to allow it" not in message
    else:
        assert refused(job, allow).endswith(
            f"backup-agent allow --database {shlex.quote(f'{plugin}:{name}{fix}')}"
        )


def test_the_user_stays_the_portals_choice(storage_root: Path):
    allow = AllowList(databases=("mysql:shop@db02.example.com:3306",), storage=(str(storage_root),))
    for user in ({}, {"user": "backup"}, {"user": "root"}):
        options = {"database": "shop", "host": "db02.example.com", "port": 3306, **user}
        assert check(backup_job("mysql", options, storage_root), allow) == Permit()


def test_restores_into_a_database_pin_the_target_and_the_connection(storage_root: Path):
    allow = AllowList(
        databases=("postgresql:orders@db01.example.com:5432", "postgresql:restored_*@db01.example.com:5432"),
        storage=(str(storage_root),),
    )
    ref = {"location": "orders/app01-data/job-1", "sha256": "0" * 64}
    db01 = {**ORDERS, "host": "db01.example.com", "port": 5432}

    def restore(options: dict, target: str) -> dict:
        return restore_job("postgresql", options, storage_root, ref, target)

    assert check(restore(db01, "restored_1"), allow) == Permit()
    assert refused(restore(db01, "payroll"), allow).endswith(
        "backup-agent allow --database postgresql:payroll@db01.example.com:5432"
    )
    message = refused(restore({**db01, "host": "evil.example.net"}, "restored_1"), allow)
    assert (
        "database postgresql:restored_1 on evil.example.net:5432 is not in this server's "
        "allow-list for restores" in message
    )
    assert message.endswith("backup-agent allow --database postgresql:restored_1@evil.example.net:5432")
    assert refused(restore({**db01, "port": 6432}, "restored_1"), allow).endswith(
        "--database postgresql:restored_1@db01.example.com:6432"
    )
    assert "restored_1 on db01.example.com is not" in refused(
        restore({**ORDERS, "host": "db01.example.com"}, "restored_1"), allow
    )


def test_restore_tests_of_databases_pin_the_connection_but_not_the_name(storage_root: Path):
    ref = {"location": "orders/app01-data/job-1", "sha256": "0" * 64}
    allow = AllowList(databases=("postgresql:other@db01.example.com:5432",), storage=(str(storage_root),))
    db01 = {**ORDERS, "host": "db01.example.com", "port": 5432}

    def restore_test(options: dict) -> dict:
        return other_job("restore_test", "postgresql", options, storage_root, ref)

    # The scratch database is the agent's own: any entry for that connection will do.
    assert check(restore_test(db01), allow) == Permit()
    # The local default connection needs no entry at all, as before.
    assert check(restore_test(ORDERS), AllowList(storage=(str(storage_root),))) == Permit()
    # But plugin_env's password must not follow the portal to another host.
    message = refused(restore_test({**db01, "host": "evil.example.net"}), allow)
    assert "the postgresql connection on evil.example.net:5432 is not in this server's allow-list" in message
    assert message.endswith("backup-agent allow --database postgresql:orders@evil.example.net:5432")
    assert "without a host" in refused(restore_test({**ORDERS, "port": 5432}), allow)
    assert refused(restore_test({**db01, "port": 5433}), allow).endswith(
        "postgresql:orders@db01.example.com:5433"
    )


def test_commands_must_be_allowed_exactly_by_absolute_path(storage_root: Path):
    echo = tool("echo")
    allow = AllowList(commands=(echo,), storage=(str(storage_root),))

    assert check(backup_job("command", {"backup_argv": [echo, "hi"]}, storage_root), allow) == Permit()
    message = refused(backup_job("command", {"backup_argv": [echo + "2"]}, storage_root), allow)
    assert message.endswith(f"backup-agent allow --command {echo}2")
    bare = refused(backup_job("command", {"backup_argv": ["echo", "hi"]}, storage_root), allow)
    assert "program echo is not an absolute path" in bare and "to allow it" not in bare


def test_pattern_characters_are_quoted_for_the_shell(storage_root: Path):
    job = backup_job("files", {"paths": ["/srv/my app"]}, storage_root)
    message = refused(job, AllowList(storage=(str(storage_root),)))
    assert message.endswith("backup-agent allow --path '/srv/my app'")


# --- the config file ----------------------------------------------------------------


def test_a_config_without_an_allow_section_allows_nothing(storage_root: Path, app: Path):
    cfg = parse({"server": "https://p", "agent_token": "t", "hostname": "h"})

    assert cfg.allow == AllowList() and cfg.allow.is_empty()
    for job in (
        backup_job("files", {"paths": [str(app)]}, storage_root),
        backup_job("command", {"backup_argv": [tool("echo")]}, storage_root),
        other_job("expire", "files", {"paths": [str(app)]}, storage_root, {"location": "a/b/job-1"}),
    ):
        assert "allow-list for storage" in refused(job, cfg.allow)


# What may not follow "postgresql:orders@".
BAD_CONNECTIONS = [
    "",  # '@' without a host
    "db01.example.com:0",
    "db01.example.com:70000",
    "db01.example.com:65536",
    "db01.example.com:",
    "db01.example.com:5432x",
    "db01.example.com:5432:1",
    "db01.example.com:+5432",
    "db01.example.com: 5432",
    "db01.example.com:５４３２",  # not ASCII digits
    "db01.example.com/x",
    "db_01.example.com",
    "-db01.example.com",
    "db01..example.com",
    "db01.example.com.",
    "db01 example.com",
    "db01@example.com",
    "999.1.1.1",
    "10.0.0",
    "::1",  # IPv6 without brackets
    "2001:db8::5:5432",
    "[::1",
    "[::1]5432",
    "[::1]:",
    "[::1]:0",
    "[not-an-address]",
    "[10.0.0.5]",
    "[fe80::1%eth0]",
    "/",
    "/var/run/../postgresql",
    "/var/run/postgresql:99999",
    "/var/run/post gresql",
    "relative/folder",
]


@pytest.mark.parametrize(
    "allow",
    [
        [],
        None,
        "everything",
        {"paths": "/srv/app"},
        {"paths": [1]},
        {"paths": ["relative/dir"]},
        {"paths": ["/srv/app/../etc"]},
        {"paths": ["/srv/a\0b"]},
        {"pathz": ["/srv/app"]},
        {"commands": ["echo"]},
        {"storage": [None]},
        {"databases": ["orders"]},
        {"databases": ["oracle:orders"]},
        {"databases": ["postgresql:"]},
        {"databases": ["postgresql:orders; drop"]},
        *({"databases": [f"postgresql:orders@{where}"]} for where in BAD_CONNECTIONS),
    ],
)
def test_the_allow_section_is_parsed_strictly(allow):
    data = json.loads(Config(server="https://p", agent_token="t", hostname="h").to_json())
    with pytest.raises(ConfigError):
        parse({**data, "allow": allow})


def test_database_entries_are_normalised(storage_root: Path):
    written = [
        "postgresql:orders@DB01.Example.COM:05432",
        "postgresql:orders@[2001:DB8:0:0::5]",
        "mysql:shop@/var/run/mysqld//",
        "mysql:shop@10.0.0.5:3306",
        "postgresql:orders@db01.example.com:5432",  # the first one again, once normalised
    ]
    cfg = parse({"server": "https://p", "agent_token": "t", "hostname": "h", "allow": {"databases": written}})

    assert cfg.allow.databases == (
        "postgresql:orders@db01.example.com:5432",
        "postgresql:orders@[2001:db8::5]",
        "mysql:shop@/var/run/mysqld",
        "mysql:shop@10.0.0.5:3306",
    )


def test_the_allow_section_round_trips_through_the_config_file(tmp_path: Path):
    allow = AllowList(
        paths=("/srv/app",),
        restore_roots=("/srv/restore",),
        commands=("/usr/local/bin/export-app",),
        databases=("postgresql:orders_*", "mysql:shop", "postgresql:orders@[2001:db8::5]:5432"),
        storage=("/mnt/protection",),
    )
    path = tmp_path / "config.json"
    write_private(path, config(allow=allow))

    assert load(path).allow == allow
    assert json.loads(path.read_text())["allow"]["databases"] == [
        "postgresql:orders_*",
        "mysql:shop",
        "postgresql:orders@[2001:db8::5]:5432",
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- the CLI -------------------------------------------------------------------------


def enrol(portal: FakePortal, path: Path, *flags: str) -> int:
    return main(
        [
            "enrol",
            "--server",
            portal.url,
            "--token",
            "enrol-me",
            "--hostname",
            "app01.test",
            "--config",
            str(path),
            "--spool-dir",
            str(path.parent / "spool"),
            *flags,
        ]
    )


def test_enrol_writes_the_allow_list_of_its_flags(portal: FakePortal, tmp_path: Path):
    path = tmp_path / "etc" / "config.json"
    flags = [
        *("--allow-path", "/srv/app/", "--allow-path", "/etc/app"),
        *("--restore-root", "/srv/restore"),
        *("--allow-command", "/usr/local/bin/export-app"),
        *("--allow-database", "postgresql:orders_*"),
        *("--allow-storage", "/mnt/protection"),
    ]

    assert enrol(portal, path, *flags) == 0

    assert load(path).allow == AllowList(
        paths=("/srv/app", "/etc/app"),
        restore_roots=("/srv/restore",),
        commands=("/usr/local/bin/export-app",),
        databases=("postgresql:orders_*",),
        storage=("/mnt/protection",),
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "flags",
    [
        ["--allow-path", "srv/app"],
        ["--restore-root", "/srv/../etc"],
        ["--allow-command", "echo"],
        ["--allow-database", "oracle:x"],
        ["--allow-storage", "/mnt/a\0b"],
    ],
)
def test_enrol_with_a_bad_allow_flag_fails_before_using_the_token(portal: FakePortal, tmp_path: Path, flags):
    path = tmp_path / "etc" / "config.json"

    assert enrol(portal, path, *flags) == 2

    assert portal.calls("enrol") == [] and not path.exists()


def test_allow_deny_and_policy(portal: FakePortal, tmp_path: Path, capsys):
    path = tmp_path / "etc" / "config.json"
    assert enrol(portal, path) == 0
    assert load(path).allow.is_empty()
    conf = ["--config", str(path)]

    assert (
        main(["allow", "--path", "/srv/app/", "--path", "/srv/other", "--database", "mysql:shop", *conf]) == 0
    )
    assert (
        main(["allow", "--path", "/srv/app", "--storage", "/mnt/protection", "--command", "/bin/true", *conf])
        == 0
    )
    assert load(path).allow == AllowList(
        paths=("/srv/app", "/srv/other"),
        commands=("/bin/true",),
        databases=("mysql:shop",),
        storage=("/mnt/protection",),
    )
    assert main(["deny", "--path", "/srv/other", "--database", "mysql:shop", *conf]) == 0
    assert main(["deny", "--restore-root", "/never/added", *conf]) == 0  # already not allowed: fine
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [name for name in os.listdir(path.parent) if name.startswith(".")] == []  # no temporary file left
    capsys.readouterr()

    assert main(["policy", "--json", *conf]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "paths": ["/srv/app"],
        "restore_roots": [],
        "commands": ["/bin/true"],
        "databases": [],
        "storage": ["/mnt/protection"],
    }
    assert main(["policy", *conf]) == 0
    text = capsys.readouterr().out
    assert "  /srv/app\n" in text and "  /mnt/protection\n" in text and "(none)" in text

    assert (
        main(["deny", "--path", "/srv/app", "--command", "/bin/true", "--storage", "/mnt/protection", *conf])
        == 0
    )
    capsys.readouterr()
    assert main(["policy", *conf]) == 0
    assert "nothing is allowed: every job is refused" in capsys.readouterr().out
    assert load(path).agent_token == portal.agent_token  # the rest of the config is kept


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--path", "relative"],
        ["--path", "/srv/a\0b"],
        ["--path", "/srv/app/.."],
        ["--command", "true"],
        ["--database", "oracle:x"],
        ["--database", "postgresql"],
        ["--database", "postgresql:orders@db01.example.com:0"],
        ["--database", "postgresql:orders@db01.example.com:70000"],
        ["--database", "postgresql:orders@db01.example.com:5432/x"],
        ["--database", "postgresql:orders@db_01"],
        ["--database", "postgresql:orders@::1"],
        ["--path", "/srv/app", "--database", "mysql:shop@db02:3306:1"],  # one bad entry: nothing changes
        ["--storage", ""],
    ],
)
def test_allow_validates_its_input_and_leaves_the_config_alone(portal: FakePortal, tmp_path: Path, flags):
    path = tmp_path / "etc" / "config.json"
    assert enrol(portal, path, "--allow-path", "/srv/app") == 0
    before = path.read_bytes()

    assert main(["allow", *flags, "--config", str(path)]) == 2
    assert main(["deny", *flags, "--config", str(path)]) == 2

    assert path.read_bytes() == before


def test_allow_and_deny_take_pinned_database_entries(portal: FakePortal, tmp_path: Path, caplog):
    path = tmp_path / "etc" / "config.json"
    assert enrol(portal, path, "--allow-database", "postgresql:orders@DB01.example.com:5432") == 0
    conf = ["--config", str(path)]

    assert main(["allow", "--database", "mysql:shop@[2001:db8::5]:3306", *conf]) == 0
    assert load(path).allow.databases == (
        "postgresql:orders@db01.example.com:5432",
        "mysql:shop@[2001:db8::5]:3306",
    )
    # deny takes the entry as allow does, normalised the same way
    assert main(["deny", "--database", "postgresql:orders@db01.EXAMPLE.com:05432", *conf]) == 0
    assert load(path).allow.databases == ("mysql:shop@[2001:db8::5]:3306",)
    assert main(["allow", "--database", "postgresql:orders@db01.example.com:70000", *conf]) == 2
    assert "PORT must be a number from 1 to 65535, not '70000'" in caplog.text


def test_the_real_entry_point_edits_and_prints_the_allow_list(portal: FakePortal, tmp_path: Path):
    path = tmp_path / "etc" / "config.json"
    assert enrol(portal, path) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "BACKUP_AGENT_CONFIG": str(path)}

    def agent(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "backup_agent", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)

    assert agent("allow", "--restore-root", "/srv/restore").returncode == 0
    shown = agent("policy", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["restore_roots"] == ["/srv/restore"]
    bad = agent("allow", "--database", "sqlite:x")
    assert bad.returncode == 2 and "--database 'sqlite:x'" in bad.stderr


# --- refusals when jobs run -------------------------------------------------------------


def test_refused_files_backup_writes_nothing_to_storage(app: Path, storage_root: Path):
    job = backup_job("files", {"paths": [str(app)]}, storage_root)

    error = failed(execute(job, allow=AllowList(storage=(str(storage_root),))))

    assert error == (
        f"refused by agent: {app} is not in this server's allow-list for backups; "
        f"to allow it, run on the server as root: backup-agent allow --path {app}"
    )
    assert os.listdir(storage_root) == []  # no .partial folder, not even the client's folder


def test_refused_storage_root_is_not_written(app: Path, storage_root: Path):
    job = backup_job("files", {"paths": [str(app)]}, storage_root)

    error = failed(execute(job, allow=AllowList(paths=(str(app),))))

    assert error.endswith(f"backup-agent allow --storage {storage_root}")
    assert os.listdir(storage_root) == []


def test_refused_command_backup_never_runs_the_program(storage_root: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    job = backup_job("command", {"backup_argv": [tool("sh"), "-c", f"touch {marker}"]}, storage_root)

    error = failed(execute(job, allow=AllowList(commands=(tool("echo"),), storage=(str(storage_root),))))

    assert f"program {tool('sh')} is not in this server's allow-list for commands" in error
    assert not marker.exists() and os.listdir(storage_root) == []


def test_refused_database_backup_writes_nothing(storage_root: Path):
    job = backup_job("postgresql", {"database": "payroll", **PG}, storage_root)

    error = failed(
        execute(job, allow=AllowList(databases=("postgresql:orders",), storage=(str(storage_root),)))
    )

    assert error.endswith("backup-agent allow --database postgresql:payroll@127.0.0.1:5432")
    assert os.listdir(storage_root) == []


@pytest.fixture
def fake_db_tools(tmp_path: Path) -> tuple[dict, Path]:
    """plugin_env with a password and a PATH of fake database tools that log where they were sent."""
    bin_dir, log = tmp_path / "fake-bin", tmp_path / "tools-ran.log"
    bin_dir.mkdir()
    names = (
        "pg_dump",
        "pg_restore",
        "psql",
        "createdb",
        "dropdb",
        "mysqldump",
        "mariadb-dump",
        "mysql",
        "mariadb",
    )
    for name in names:
        (bin_dir / name).write_text(f'#!/bin/sh\necho "$0 $PGHOST $*" >> {log}\nexit 1\n')
        (bin_dir / name).chmod(0o755)
    secret = {"PATH": str(bin_dir), "PGPASSWORD": "s3cret", "MYSQL_PWD": "s3cret"}
    return {"postgresql": secret, "mysql": secret}, log


@pytest.mark.parametrize(("plugin", "port"), [("postgresql", 5432), ("mysql", 3306)])
def test_a_host_the_entry_does_not_name_is_refused_and_no_tool_runs(
    storage_root: Path, fake_db_tools, plugin: str, port: int
):
    plugin_env, log = fake_db_tools
    options = {"database": "orders", "host": "attacker.example.net", "port": port, "user": "backup"}
    entry = f"{plugin}:orders@db01.example.com:{port}"
    job = backup_job(plugin, options, storage_root)

    error = failed(
        execute(job, allow=AllowList(databases=(entry,), storage=(str(storage_root),)), plugin_env=plugin_env)
    )

    assert f"database {plugin}:orders on attacker.example.net:{port} is not in" in error
    assert error.endswith(f"backup-agent allow --database {plugin}:orders@attacker.example.net:{port}")
    assert not log.exists() and os.listdir(storage_root) == []  # nothing connected anywhere
    # Proof the fake tools would have shown it: allowing that host does run them.
    allowed = AllowList(
        databases=(f"{plugin}:orders@attacker.example.net:{port}",), storage=(str(storage_root),)
    )
    execute(job | {"id": job["id"] + 1}, allow=allowed, plugin_env=plugin_env)
    assert log.exists()


@pytest.fixture
def files_backup(app: Path, storage_root: Path) -> dict:
    """A real backup of `app` and the `backup` object the portal sends for it."""
    return backup_ref(succeeded(execute(backup_job("files", {"paths": [str(app)]}, storage_root))))


def test_refused_files_restore_creates_no_target_and_reads_no_storage(
    app: Path, storage_root: Path, tmp_path: Path, files_backup: dict
):
    target = tmp_path / "not-a-restore-root" / "copy"
    allow = AllowList(
        paths=(str(app),), restore_roots=(str(tmp_path / "restore"),), storage=(str(storage_root),)
    )
    job = restore_job("files", {"paths": [str(app)]}, storage_root, files_backup, str(target))

    error = failed(execute(job, allow=allow))

    assert error.endswith(f"backup-agent allow --restore-root {target}")
    assert not target.parent.exists()
    # Refused before storage is opened: a backup that is not even there gives the same answer.
    gone = restore_job(
        "files", {"paths": [str(app)]}, storage_root, {**files_backup, "location": "x/y/job-9"}, str(target)
    )
    assert failed(execute(gone, allow=allow)) == error


def test_refused_in_place_restore_writes_no_member_at_all(tmp_path: Path, storage_root: Path):
    # "/" of a pretend server: /srv/app is allowed, /srv/other is not.
    root = tmp_path / "root"
    (root / "srv" / "app").mkdir(parents=True)
    (root / "srv" / "other").mkdir()
    (root / "srv" / "app" / "keep.txt").write_text("live\n")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("srv/app/restored.txt", "srv/other/evil.txt"):
            info = tarfile.TarInfo(name)
            info.size = 5
            tar.addfile(info, io.BytesIO(b"data\n"))
    folder = storage_root / "orders" / "app01-data" / "job-1"
    folder.mkdir(parents=True)
    (folder / "data.tar").write_bytes(archive.getvalue())
    ref = {"location": "orders/app01-data/job-1", "sha256": hashlib.sha256(archive.getvalue()).hexdigest()}
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    allow = AllowList(paths=(str(root / "srv" / "app"),), storage=(str(storage_root),))

    job = restore_job("files", {"paths": ["/srv/app"]}, storage_root, ref, str(root), overwrite=True)
    error = failed(execute(job, allow=allow))

    assert f"archive member srv/other/evil.txt would be restored to {root}/srv/other/evil.txt" in error
    assert error.endswith(f"backup-agent allow --path {root}/srv/other/evil.txt")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before  # not even restored.txt

    # Allowing both paths lets the same in-place restore through.
    both = AllowList(
        paths=(str(root / "srv" / "app"), str(root / "srv" / "other")), storage=(str(storage_root),)
    )
    succeeded(execute(job | {"id": job["id"] + 1}, allow=both))
    assert (root / "srv" / "other" / "evil.txt").read_text() == "data\n"
    assert (root / "srv" / "app" / "keep.txt").read_text() == "live\n"


def test_refused_database_restore_touches_no_database(storage_root: Path):
    ref = {"location": "orders/app01-data/job-1", "sha256": "0" * 64}
    job = restore_job(
        "mysql", {"database": "shop", "host": "127.0.0.1", "port": 1}, storage_root, ref, "prod"
    )

    error = failed(execute(job, allow=AllowList(databases=("mysql:shop",), storage=(str(storage_root),))))

    # Port 1 would have been "connection refused" had the agent tried to connect.
    assert "database mysql:prod on 127.0.0.1:1 is not in this server's allow-list for restores" in error
    assert error.endswith("backup-agent allow --database mysql:prod@127.0.0.1:1")


@pytest.mark.parametrize("kind", ["restore", "restore_test"])
def test_refused_command_restore_never_runs_the_program(storage_root: Path, tmp_path: Path, kind: str):
    marker = tmp_path / "ran"
    options = {"backup_argv": [tool("echo"), "hi"], "restore_argv": [tool("sh"), "-c", f"touch {marker}"]}
    backup = backup_ref(succeeded(execute(backup_job("command", options, storage_root))))
    if kind == "restore":
        job = restore_job("command", options, storage_root, backup, str(tmp_path / "target"))
    else:
        job = other_job("restore_test", "command", options, storage_root, backup)
    allow = AllowList(commands=(tool("echo"),), storage=(str(storage_root),))

    error = failed(execute(job, allow=allow, scratch_dir=str(tmp_path)))

    assert error.endswith(f"backup-agent allow --command {tool('sh')}")
    assert not marker.exists()


def test_restore_test_needs_only_the_storage_for_files(
    app: Path, storage_root: Path, tmp_path: Path, files_backup
):
    job = other_job("restore_test", "files", {"paths": [str(app)]}, storage_root, files_backup)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    succeeded(execute(job, allow=AllowList(storage=(str(storage_root),)), scratch_dir=str(scratch)))
    error = failed(
        execute(job | {"id": job["id"] + 1}, allow=AllowList(paths=(str(app),)), scratch_dir=str(scratch))
    )

    assert error.endswith(f"backup-agent allow --storage {storage_root}")
    assert os.listdir(scratch) == []


def test_restore_test_of_a_database_does_not_recheck_its_source(pg_database, storage_root: Path):
    name = pg_database()
    psql(f'CREATE DATABASE "{name}";')
    psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);", name)
    source = AllowList(databases=(f"postgresql:{name}@127.0.0.1:5432",), storage=(str(storage_root),))
    job = backup_job("postgresql", {"database": name, **PG}, storage_root)
    backup = backup_ref(succeeded(execute(job, allow=source)))

    # The scratch database is the agent's own; the source is neither read nor written. Only the
    # connection it is created over must be one the admin allowed (an entry for any name will do).
    job = other_job("restore_test", "postgresql", {"database": name, **PG}, storage_root, backup)
    connection = AllowList(databases=("postgresql:other@127.0.0.1:5432",), storage=(str(storage_root),))
    result = succeeded(execute(job, allow=connection))

    assert result["manifest"]["facts"]["row_counts"] == {"public.t": 2}


def test_refused_expire_deletes_nothing(storage_root: Path, tmp_path: Path):
    folder = storage_root / "orders" / "c1" / "job-5"
    folder.mkdir(parents=True)
    (folder / "data.bin").write_bytes(b"keep")
    ref = {"location": "orders/c1/job-5", "sha256": "", "compression": "none"}
    job = other_job("expire", "files", {"paths": ["/x"]}, storage_root, ref)

    error = failed(execute(job, allow=AllowList(storage=(str(tmp_path / "elsewhere"),))))

    assert error.endswith(f"backup-agent allow --storage {storage_root}")
    assert (folder / "data.bin").read_bytes() == b"keep"


# --- the running agent ----------------------------------------------------------------


def test_a_running_agent_applies_allow_and_deny_from_its_next_job_and_reports_its_list(
    portal: FakePortal, tmp_path: Path, storage_root: Path
):
    path = tmp_path / "etc" / "config.json"
    assert enrol(portal, path) == 0
    agent = Agent(load(path), config_file=path)
    echo = [tool("echo"), "hi"]

    portal.queued = [first := backup_job("command", {"backup_argv": echo}, storage_root)]
    assert agent.run_once() == 0
    assert failed(portal.completes(first["id"])[0]).endswith(
        f"backup-agent allow --storage {storage_root} --command {tool('echo')}"
    )

    assert (
        main(["allow", "--storage", str(storage_root), "--command", tool("echo"), "--config", str(path)]) == 0
    )
    portal.queued = [second := backup_job("command", {"backup_argv": echo}, storage_root)]
    assert agent.run_once() == 0  # the same agent object: no restart
    assert portal.completes(second["id"])[0]["status"] == "succeeded"

    assert main(["deny", "--command", tool("echo"), "--config", str(path)]) == 0
    portal.queued = [third := backup_job("command", {"backup_argv": echo}, storage_root)]
    assert agent.run_once() == 0
    assert "allow-list for commands" in failed(portal.completes(third["id"])[0])

    first_poll, second_poll, third_poll = portal.calls("poll")
    assert first_poll["allow"] == AllowList().to_json()
    assert second_poll["allow"]["commands"] == [tool("echo")]
    assert third_poll["allow"] == {**AllowList().to_json(), "storage": [str(storage_root)]}


def test_an_unreadable_config_refuses_jobs_instead_of_using_a_stale_list(tmp_path: Path, storage_root: Path):
    path = tmp_path / "config.json"
    allow = AllowList(commands=(tool("echo"),), storage=(str(storage_root),))
    write_private(path, config(allow=allow))
    executor = Executor(load(path), config_file=path)
    path.write_text("{ broken")
    job = backup_job("command", {"backup_argv": [tool("echo"), "hi"]}, storage_root)

    report = executor.execute(job, new_context(job, executor.config), Progress())

    assert failed(report).startswith("refused by agent: cannot read this server's allow-list")
    assert os.listdir(storage_root) == []


def test_automatic_upgrades_are_the_servers_admins_to_allow(tmp_path, capsys):
    """Off by default; `allow --auto-upgrade` / `deny --auto-upgrade` alone change it; the file is strict."""
    path = tmp_path / "config.json"
    write_private(path, Config(server="https://p", agent_token="t", hostname="h"))
    conf = ["--config", str(path)]
    assert load(path).auto_upgrade is False

    assert main(["allow", "--auto-upgrade", *conf]) == 0
    assert load(path).auto_upgrade is True
    assert main(["deny", "--auto-upgrade", *conf]) == 0
    assert load(path).auto_upgrade is False
    assert "automatic upgrades not allowed on this server" in capsys.readouterr().out

    data = json.loads(Config(server="https://p", agent_token="t", hostname="h").to_json())
    for wrong in (1, "yes", None):
        with pytest.raises(ConfigError):
            parse({**data, "auto_upgrade": wrong})
