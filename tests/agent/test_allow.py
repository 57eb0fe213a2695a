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
    allow = AllowList(databases=("postgresql:orders_*", "mysql:shop"), storage=(str(storage_root),))
    options = {"database": database, **PG}
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
    ],
)
def test_the_allow_section_is_parsed_strictly(allow):
    data = json.loads(Config(server="https://p", agent_token="t", hostname="h").to_json())
    with pytest.raises(ConfigError):
        parse({**data, "allow": allow})


def test_the_allow_section_round_trips_through_the_config_file(tmp_path: Path):
    allow = AllowList(
        paths=("/srv/app",),
        restore_roots=("/srv/restore",),
        commands=("/usr/local/bin/export-app",),
        databases=("postgresql:orders_*", "mysql:shop"),
        storage=("/mnt/protection",),
    )
    path = tmp_path / "config.json"
    write_private(path, config(allow=allow))

    assert load(path).allow == allow
    assert json.loads(path.read_text())["allow"]["databases"] == ["postgresql:orders_*", "mysql:shop"]
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

    assert error.endswith("backup-agent allow --database postgresql:payroll")
    assert os.listdir(storage_root) == []


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
    assert "database mysql:prod is not in this server's allow-list for restores" in error


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
    backup = backup_ref(succeeded(execute(backup_job("postgresql", {"database": name, **PG}, storage_root))))

    # The scratch database is the agent's own; the source is neither read nor written.
    job = other_job("restore_test", "postgresql", {"database": name, **PG}, storage_root, backup)
    result = succeeded(execute(job, allow=AllowList(storage=(str(storage_root),))))

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
