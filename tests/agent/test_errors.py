"""Structured errors: every failure path ends in a report with the right `error_class`.

Unit tests of the classification (errno, a tool's stderr, the error types),
then whole jobs through the executor with real tools, each failing one way.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from backup_agent import PROTOCOL_VERSION, error_classes
from backup_agent.allow import AllowList
from backup_agent.errors import (
    AgentError,
    Cancelled,
    ChecksumMismatch,
    ConfigError,
    InvalidOptions,
    RefusedByAgent,
    StorageError,
    TargetNotEmpty,
    TimedOut,
    ToolFailed,
    ToolNotFound,
    UnsafeArchive,
    classify_tool_output,
    describe_tool_failure,
    os_error_class,
    os_failure,
    tool_failure,
)

from .helpers import backup_job, backup_ref, execute, other_job, restore_job, succeeded, tool

# The portal's catalog.choices.ErrorClass values (minus lease_expired, which only
# the portal decides). The agent imports nothing from the portal, so the strings
# are written out here: changing one breaks this test on purpose.
PORTAL_CODES = {
    "permission_denied",
    "disk_full",
    "database_unreachable",
    "command_not_found",
    "timeout",
    "checksum_mismatch",
    "refused_by_agent",
    "unknown",
}
# Codes the agent sends that the portal learns with protocol 2.
NEW_CODES = {"invalid_job"}


def test_the_code_list_is_the_portals_plus_the_new_ones():
    assert set(error_classes.ALL) == PORTAL_CODES | NEW_CODES
    assert len(error_classes.ALL) == len(set(error_classes.ALL))
    assert all(len(code) <= 24 for code in error_classes.ALL)  # the portal's column is 24 wide
    assert "lease_expired" not in error_classes.ALL


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (AgentError("restore test mismatch: table t: expected 1, restored 0"), "unknown"),
        (
            AgentError("permission denied: cannot execute /x", error_class="permission_denied"),
            "permission_denied",
        ),
        (ConfigError("agent.json: not valid JSON"), "unknown"),
        (InvalidOptions("plugin 'oracle' is not known to this agent"), "invalid_job"),
        (TargetNotEmpty("/srv/restore"), "invalid_job"),
        (ChecksumMismatch("data.tar", "ab", "cd"), "checksum_mismatch"),
        (ToolNotFound("pg_dump"), "command_not_found"),
        (ToolFailed("tar failed (exit status 2)"), "unknown"),
        (TimedOut("pg_dump timed out after 60s and was killed"), "timeout"),
        (Cancelled("cancelled by the portal"), "unknown"),
        (StorageError("backup folder not found: /x"), "unknown"),
        (UnsafeArchive("../etc/passwd"), "unknown"),
        (RefusedByAgent("/etc is not in this server's allow-list"), "refused_by_agent"),
    ],
)
def test_every_agent_error_carries_its_class(error: AgentError, code: str):
    assert error.error_class == code


def test_an_unknown_class_is_a_programming_error():
    with pytest.raises(ValueError, match="not an error class"):
        AgentError("x", error_class="lease_expired")


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (errno.ENOSPC, "disk_full"),
        (errno.EDQUOT, "disk_full"),
        (errno.EACCES, "permission_denied"),
        (errno.EPERM, "permission_denied"),
        (errno.ETIMEDOUT, "timeout"),
        (errno.ENOENT, "unknown"),  # a missing file; a missing program is caught where it is started
        (errno.EIO, "unknown"),
    ],
)
def test_os_errors_are_classed_by_errno(number: int, code: str):
    exc = OSError(number, os.strerror(number), "/mnt/protection/x")
    assert os_error_class(exc) == code
    failure = os_failure(exc)
    assert failure.error_class == code
    assert str(failure).endswith(": /mnt/protection/x")


def test_a_real_enospc_from_the_kernel_is_disk_full():
    with pytest.raises(OSError) as raised, open("/dev/full", "wb", buffering=0) as full:  # noqa: PT012
        full.write(b"x")
    assert os_error_class(raised.value) == "disk_full"
    assert str(os_failure(raised.value)) == "no space left on device"


def test_timeout_error_without_errno_is_timeout():
    assert os_error_class(TimeoutError("timed out")) == "timeout"


# What the real tools print (PostgreSQL 15/16 libpq, MariaDB 10/11 clients, GNU tools, bash).
@pytest.mark.parametrize(
    ("stderr", "phrase", "code"),
    [
        (
            "tar: /srv/x: Wrote only 4096 of 10240 bytes: No space left on device",
            "no space left on device",
            "disk_full",
        ),
        ("cp: error writing '/mnt/x': Disk quota exceeded", "disk quota exceeded", "disk_full"),
        (
            'pg_dump: error: connection to server at "127.0.0.1", port 1 failed: Connection refused',
            "connection refused",
            "database_unreachable",
        ),
        (
            'pg_dump: error: could not translate host name "db9" to address: Name or service not known',
            "connection refused",
            "database_unreachable",
        ),
        (
            'pg_dump: error: connection to server at "10.0.0.9", port 5432 failed: timeout expired',
            "timed out",
            "database_unreachable",
        ),
        (
            "mariadb-dump: Got error: 2002: \"Can't connect to server on '127.0.0.1' (115)\"",
            "connection refused",
            "database_unreachable",
        ),
        (
            "ERROR 2005 (HY000): Unknown MySQL server host 'db9' (-2)",
            "connection refused",
            "database_unreachable",
        ),
        (
            'pg_dump: error: connection to server on socket failed: FATAL:  database "nosuch" does not exist',
            "not found",
            "database_unreachable",
        ),
        ("ERROR 1049 (42000): Unknown database 'nosuch'", "not found", "database_unreachable"),
        (
            'psql: error: connection to server at "127.0.0.1", port 5432 failed:'
            ' FATAL:  password authentication failed for user "backup"',
            "authentication failed",
            "permission_denied",
        ),
        (
            "ERROR 1045 (28000): Access denied for user 'root'@'localhost' (using password: YES)",
            "permission denied",
            "permission_denied",
        ),
        (
            "pg_dump: error: query failed: ERROR:  permission denied for table secrets",
            "permission denied",
            "permission_denied",
        ),
        ("tar: /srv/x: Cannot open: Permission denied", "permission denied", "permission_denied"),
        (
            "/usr/local/bin/export-app: line 3: pg_dumpall: command not found",
            "command not found",
            "command_not_found",
        ),
        ("curl: (28) Operation timed out after 30001 milliseconds", "timed out", "timeout"),
        (
            'pg_restore: error: could not execute query: ERROR:  role "app" does not exist',
            "not found",
            "unknown",
        ),
        ("ERROR 1064 (42000) at line 1: You have an error in your SQL syntax", "", "unknown"),
        ("", "", "unknown"),
    ],
)
def test_tool_stderr_gives_phrase_and_class(stderr: str, phrase: str, code: str):
    assert classify_tool_output(["some earlier line", stderr]) == (phrase, code)
    failure = tool_failure("tool", 1, ["some earlier line", stderr])
    assert failure.error_class == code
    # The message people read keeps the tool's own last words.
    assert str(failure) == describe_tool_failure("tool", 1, ["some earlier line", stderr])
    if stderr:
        assert str(failure).endswith(stderr.strip()[:500])


def test_tool_failure_message_is_phrase_then_last_words():
    failure = tool_failure(
        "pg_dump", 1, ["pg_dump: error: connection to server failed: Connection refused", ""]
    )
    assert str(failure) == (
        "pg_dump failed (exit status 1): connection refused: "
        "pg_dump: error: connection to server failed: Connection refused"
    )


# --- whole jobs through the executor ------------------------------------------------


def command_backup(storage_root: Path, *argv: str) -> dict:
    return backup_job("command", {"backup_argv": list(argv)}, storage_root)


def failed(report: dict, code: str) -> dict:
    assert report["status"] == "failed", report
    assert report["error_class"] == code, report["error"]
    assert report["protocol"] == PROTOCOL_VERSION
    assert isinstance(report["error"], str) and report["error"]
    return report


def test_succeeded_reports_say_their_protocol_and_carry_no_class(storage_root: Path):
    report = succeeded(execute(command_backup(storage_root, tool("echo"), "hello")))
    assert report["protocol"] == PROTOCOL_VERSION and "error_class" not in report


def test_tool_saying_disk_full_is_disk_full(storage_root: Path):
    report = failed(
        execute(
            command_backup(
                storage_root, tool("sh"), "-c", "echo 'cat: write error: No space left on device' >&2; exit 1"
            )
        ),
        "disk_full",
    )
    assert (
        report["error"]
        == "sh failed (exit status 1): no space left on device: cat: write error: No space left on device"
    )


def test_tool_saying_permission_denied_is_permission_denied(storage_root: Path):
    report = failed(
        execute(
            command_backup(
                storage_root, tool("sh"), "-c", "echo 'tar: /srv: Cannot open: Permission denied' >&2; exit 2"
            )
        ),
        "permission_denied",
    )
    assert report["error"].endswith("tar: /srv: Cannot open: Permission denied")


def test_tool_failing_without_known_words_is_unknown_and_keeps_its_last_line(storage_root: Path):
    report = failed(
        execute(
            command_backup(
                storage_root, tool("sh"), "-c", "echo 'export: something odd happened' >&2; exit 4"
            )
        ),
        "unknown",
    )
    assert report["error"] == "sh failed (exit status 4): export: something odd happened"


def test_missing_program_is_command_not_found(storage_root: Path):
    report = failed(execute(command_backup(storage_root, "/nonexistent/export-tool")), "command_not_found")
    assert report["error"] == "command not found: /nonexistent/export-tool"


def test_script_whose_interpreter_is_missing_is_command_not_found(storage_root: Path, tmp_path: Path):
    script = tmp_path / "export-app"
    script.write_text("#!/nonexistent/python9\nprint('hi')\n")
    script.chmod(0o755)
    report = failed(execute(command_backup(storage_root, str(script))), "command_not_found")
    assert report["error"].startswith(f"command not found: {script}")


def test_program_that_cannot_be_executed_is_permission_denied(storage_root: Path, tmp_path: Path):
    interpreter = tmp_path / "not-executable"
    interpreter.write_text("")
    interpreter.chmod(0o644)  # execve refuses it with EACCES, even for root
    script = tmp_path / "export-app"
    script.write_text(f"#!{interpreter}\n")
    script.chmod(0o755)
    report = failed(execute(command_backup(storage_root, str(script))), "permission_denied")
    assert report["error"] == f"permission denied: cannot execute {script}"


def test_tool_killed_after_its_time_limit_is_timeout(storage_root: Path):
    report = failed(execute(command_backup(storage_root, tool("sleep"), "30"), tool_timeout=0.5), "timeout")
    assert "timed out after" in report["error"]


def test_refused_job_is_refused_by_agent(storage_root: Path):
    report = failed(
        execute(command_backup(storage_root, tool("echo")), allow=AllowList()), "refused_by_agent"
    )
    assert report["error"].startswith("refused by agent:")


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "defragment"},
        {"client": {"id": 5, "name": "c", "application": "a", "plugin": "oracle", "options": {}}},
    ],
)
def test_job_the_agent_cannot_run_as_given_is_invalid_job(storage_root: Path, change: dict):
    failed(execute(command_backup(storage_root, tool("echo")) | change, allow=AllowList()), "invalid_job")


def test_bad_plugin_options_are_invalid_job(storage_root: Path):
    report = failed(execute(command_backup(storage_root, tool("echo"), "{nope}")), "invalid_job")
    assert report["error"].startswith("invalid options:")


def test_restore_into_a_non_empty_target_without_overwrite_is_invalid_job(storage_root: Path, tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    report = succeeded(execute(backup_job("files", {"paths": [str(source)]}, storage_root)))
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")

    result = execute(
        restore_job("files", {"paths": [str(source)]}, storage_root, backup_ref(report), str(target))
    )

    assert failed(result, "invalid_job")["error"].startswith("target not empty:")


def test_corrupted_backup_is_checksum_mismatch(storage_root: Path, tmp_path: Path):
    report = succeeded(execute(command_backup(storage_root, tool("echo"), "precious data")))
    (storage_root / report["location"] / "data.bin").write_bytes(b"precious dat4\n")
    job = other_job(
        "restore_test",
        "command",
        {"backup_argv": [tool("echo")], "restore_argv": [tool("true")]},
        storage_root,
        backup_ref(report),
    )

    result = failed(execute(job), "checksum_mismatch")

    assert result["error"].startswith("checksum mismatch:")


def test_restore_test_whose_contents_differ_is_unknown(storage_root: Path, tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    report = succeeded(execute(backup_job("files", {"paths": [str(source)]}, storage_root)))
    backup = backup_ref(report)
    backup["manifest"]["facts"]["members"] += 1

    result = failed(
        execute(other_job("restore_test", "files", {"paths": [str(source)]}, storage_root, backup)), "unknown"
    )

    assert result["error"].startswith("restore test mismatch:")


def test_missing_source_folder_keeps_its_words_and_is_unknown(storage_root: Path, tmp_path: Path):
    job = backup_job("files", {"paths": [str(tmp_path / "gone")]}, storage_root)
    report = failed(execute(job), "unknown")
    assert report["error"] == f"not found: configured path {tmp_path / 'gone'} does not exist"
