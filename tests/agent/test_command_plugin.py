"""The command plugin: admin-defined argv, placeholders per element, never a shell."""

from __future__ import annotations

import gzip
import io
import os
import threading
import time
from pathlib import Path

import pytest

from backup_agent.context import JobContext
from backup_agent.errors import Cancelled, InvalidOptions, TimedOut, ToolFailed, ToolNotFound
from backup_agent.plugins import command

from .helpers import backup_job, backup_ref, execute, other_job, restore_job, succeeded, tool


def test_stdout_is_the_backup_and_placeholders_fill_single_arguments(storage_root: Path, tmp_path: Path):
    pwned = tmp_path / "pwned"
    options = {
        "backup_argv": [
            tool("printf"),
            "%s|%s|%s|%s",
            "{job_id}",
            "client={client}",
            f"; touch {pwned}",
            "$(id)",
        ],
        "restore_argv": [tool("dd"), "of={target}/restored.bin", "status=none"],
    }
    job = backup_job("command", options, storage_root)

    report = succeeded(execute(job))

    stored = (storage_root / report["location"] / "data.bin").read_bytes()
    assert stored == f"{job['id']}|client=app01-data|; touch {pwned}|$(id)".encode()
    assert not pwned.exists()  # the argument was passed literally, no shell saw it


def test_restore_streams_into_stdin_with_target_placeholder(storage_root: Path, tmp_path: Path):
    options = {
        "backup_argv": [tool("head"), "-c", "3000000", "/dev/urandom"],
        "restore_argv": [tool("dd"), "of={target}/restored.bin", "status=none"],
    }
    report = succeeded(execute(backup_job("command", options, storage_root, "gzip")))
    target = tmp_path / "restore here; rm -rf ~"  # spaces and metacharacters: still one argument
    target.mkdir()

    succeeded(execute(restore_job("command", options, storage_root, backup_ref(report), str(target))))

    original = gzip.decompress((storage_root / report["location"] / "data.bin.gz").read_bytes())
    assert (target / "restored.bin").read_bytes() == original
    assert len(original) == 3_000_000 == report["size"]


def test_restore_test_runs_restore_argv_into_a_scratch_folder(storage_root: Path, tmp_path: Path):
    options = {
        "backup_argv": [tool("echo"), "hello"],
        "restore_argv": [tool("dd"), "of={target}/out", "status=none"],
    }
    report = succeeded(execute(backup_job("command", options, storage_root)))
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    succeeded(
        execute(
            other_job("restore_test", "command", options, storage_root, backup_ref(report)),
            scratch_dir=str(scratch),
        )
    )

    assert os.listdir(scratch) == []


@pytest.mark.parametrize(
    "argv",
    [
        [],
        "echo hi",
        ["{target}"],
        ["echo", "{target}"],
        ["echo", "{job_id.__class__}"],
        ["echo", "{0}"],
        ["echo", "{client!r}"],
        ["echo", "{client:>9}"],
        ["echo", "{"],
        ["echo", "{nope}"],
    ],
)
def test_bad_backup_argv_is_refused(argv):
    with pytest.raises(InvalidOptions):
        command.validate({"backup_argv": argv})


def test_unknown_option_is_refused():
    with pytest.raises(InvalidOptions):
        command.validate({"backup_argv": ["echo"], "shell": True})


def test_missing_program_is_command_not_found(ctx: JobContext):
    with pytest.raises(ToolNotFound, match="command not found: /nonexistent/export-tool"):
        command.backup({"backup_argv": ["/nonexistent/export-tool"]}, io.BytesIO(), ctx)


def test_failing_tool_message_is_classified_and_stderr_kept(ctx: JobContext):
    argv = ["sh", "-c", "echo 'starting' >&2; echo 'could not connect: Connection refused' >&2; exit 3"]
    with pytest.raises(ToolFailed) as failure:
        command.backup({"backup_argv": argv}, io.BytesIO(), ctx)
    assert "exit status 3" in str(failure.value) and "connection refused" in str(failure.value)
    assert ctx.log.lines() == ["sh: starting", "sh: could not connect: Connection refused"]


def test_tool_running_too_long_is_killed_with_timed_out(ctx: JobContext):
    ctx.tool_timeout = 0.5
    started = time.monotonic()
    with pytest.raises(TimedOut, match="timed out"):
        command.backup({"backup_argv": ["sleep", "30"]}, io.BytesIO(), ctx)
    assert time.monotonic() - started < 10


def test_cancel_kills_the_tool_and_its_children(ctx: JobContext, tmp_path: Path):
    marker = tmp_path / "child-survived"
    argv = ["sh", "-c", f"(sleep 1; touch {marker}) & sleep 30"]
    ctx.cancel_reason = "cancelled by the portal"
    threading.Timer(0.3, ctx.cancel.set).start()

    with pytest.raises(Cancelled, match="cancelled by the portal"):
        command.backup({"backup_argv": argv}, io.BytesIO(), ctx)
    time.sleep(1.5)
    assert not marker.exists()  # the background child was killed with its group


def test_failed_backup_report_has_error_and_log_tail(storage_root: Path):
    options = {
        "backup_argv": [tool("sh"), "-c", "echo partial; echo 'disk: No space left on device' >&2; exit 1"]
    }
    report = execute(backup_job("command", options, storage_root))
    assert report["status"] == "failed"
    assert "no space left on device" in report["error"]
    assert "No space left on device" in report["log_tail"]
    assert {"started_at", "finished_at"} <= set(report)
    assert list((storage_root / "orders" / "app01-data").iterdir()) == []  # partial folder removed
