"""Issue #12: under faults nothing finished is thrown away and nothing is left behind.

A full storage target, an agent killed mid-restore, a portal outage that ends,
a config copied to another host.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_agent import runner
from backup_agent.allow import AllowList
from backup_agent.cli import main
from backup_agent.client import PortalClient
from backup_agent.config import load
from backup_agent.plugins import files
from backup_agent.runner import Agent
from backup_agent.spool import Spool
from backup_agent.state import StagingRecord, read_or_create_instance_id
from backup_agent.storage import FilesystemStorage

from .fakeportal import FakePortal
from .helpers import allow_for, backup_job, backup_ref, config, execute, restore_job, succeeded, tool

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PortalClient, "RETRY_DELAY", 0.01)


def leftovers(top: Path) -> list[str]:
    """Agent staging names anywhere under `top`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        found += [
            os.path.join(dirpath, n) for n in dirnames + filenames if n.startswith((".partial-", ".restore-"))
        ]
    return found


def wait_for(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# --- 1. storage full ------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a real filesystem that fills up. Needs root (CAP_SYS_ADMIN) to mount."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the full-storage test cannot run as a normal user")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN in this container?): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_storage_fails_disk_full_leaves_no_partial_and_the_next_backup_fits(
    small_tmpfs: Path, tmp_path: Path
):
    big = tmp_path / "big"
    big.mkdir()
    (big / "random.bin").write_bytes(os.urandom(4 << 20))  # twice the storage
    job = backup_job("files", {"paths": [str(big)]}, small_tmpfs)

    report = execute(job)

    assert report["status"] == "failed" and report["error_class"] == "disk_full", report
    assert "no space left on device" in report["error"]
    assert leftovers(small_tmpfs) == []

    small = tmp_path / "small"
    small.mkdir()
    (small / "note.txt").write_text("fits\n")
    other = backup_job("files", {"paths": [str(small)]}, small_tmpfs)
    other["client"] = {**other["client"], "id": 6, "name": "app02-notes"}
    other["destination"] = f"orders/app02-notes/job-{other['id']}"
    done = succeeded(execute(other))
    assert (small_tmpfs / done["location"] / "manifest.json").is_file()
    assert leftovers(small_tmpfs) == []


def test_abort_removes_the_partial_even_when_closing_fails_again(storage_root: Path):
    writer = FilesystemStorage(str(storage_root)).open_writer("orders/app01/job-5", "data.tar")
    writer.write(b"x" * 100)
    real = writer._fh

    class FullDisk:
        closed = False

        def close(self) -> None:
            real.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    writer._fh = FullDisk()  # type: ignore[assignment]
    writer.abort()  # must not raise

    assert not writer.partial.exists()


# --- 2. staging left by a kill ----------------------------------------------------


def test_staging_of_another_restore_does_not_make_a_target_non_empty(storage_root: Path, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    backup = succeeded(execute(backup_job("files", {"paths": [str(data)]}, storage_root)))
    target = tmp_path / "target"
    (target / ".restore-53-0123abcd" / "half").mkdir(parents=True)

    succeeded(
        execute(restore_job("files", {"paths": [str(data)]}, storage_root, backup_ref(backup), str(target)))
    )

    assert (target / str(data).lstrip("/") / "a.txt").read_text() == "a\n"
    (target / "other").write_text("real data\n")
    refused = execute(
        restore_job("files", {"paths": [str(data)]}, storage_root, backup_ref(backup), str(target))
    )
    assert refused["status"] == "failed" and "target not empty" in refused["error"]


def test_sweep_removes_stale_staging_of_its_own_but_not_of_running_jobs(tmp_path: Path):
    record = StagingRecord(tmp_path / "state")
    client_dir = tmp_path / "root" / "orders" / "app01"
    target = tmp_path / "target"
    stale_partial = client_dir / ".partial-job-7"
    running_partial = client_dir / ".partial-job-8"
    unrecorded = client_dir / ".partial-job-6"  # left by an agent that predates the record
    stale_restore = target / ".restore-9-0123abcd"
    for job, folder in ((7, stale_partial), (8, running_partial), (6, unrecorded), (9, stale_restore)):
        if folder is not unrecorded:
            record.add(job, folder)
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "f").write_text("x")
    os.chmod(stale_restore / "sub", 0o500)  # restored read-only folders are removed too
    (client_dir / "job-5").mkdir()
    (target / "keep.txt").write_text("data\n")
    (tmp_path / "root" / "orders" / ".partial-job-99").mkdir()  # not a folder this agent wrote into

    removed = record.sweep(lambda: {8})

    assert sorted(removed) == sorted(map(str, (stale_partial, unrecorded, stale_restore)))
    assert running_partial.is_dir() and (client_dir / "job-5").is_dir() and (target / "keep.txt").exists()
    assert (tmp_path / "root" / "orders" / ".partial-job-99").is_dir()
    assert [e["job"] for e in record.entries()] == [8]
    assert record.sweep(set) == [str(running_partial)]
    assert record.entries() == []
    assert stat.S_IMODE(record.path.stat().st_mode) == 0o600


def start_agent(config_file: Path, log_file: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "backup_agent", "run", "--config", str(config_file)],
            env=env,
            stdout=log,
            stderr=log,
        )


def many_files(top: Path, count: int) -> None:
    for d in range(count // 500):
        sub = top / f"d{d:03}"
        sub.mkdir(parents=True)
        for i in range(500):
            (sub / f"f{i:04}.txt").write_bytes(b"%d\n" % i * 50)


def test_a_restore_killed_with_sigkill_leaves_staging_that_the_restarted_agent_removes(
    portal: FakePortal, storage_root: Path, tmp_path: Path
):
    data = tmp_path / "data"
    many_files(data, 20000)  # enough members that unpacking takes seconds
    backup = succeeded(execute(backup_job("files", {"paths": [str(data)]}, storage_root)))
    target = tmp_path / "target"
    target.mkdir()
    config_file = tmp_path / "etc" / "config.json"
    assert (
        main(
            [
                "enrol",
                "--server",
                portal.url,
                "--token",
                "enrol-me",
                "--hostname",
                "app01.test",
                "--config",
                str(config_file),
                "--spool-dir",
                str(tmp_path / "state" / "spool"),
                "--allow-path",
                str(data),
                "--restore-root",
                str(target),
                "--allow-storage",
                str(storage_root),
            ]
        )
        == 0
    )
    cfg = load(config_file)
    first = restore_job("files", {"paths": [str(data)]}, storage_root, backup_ref(backup), str(target), True)
    portal.queued = [first]
    log_file = tmp_path / "agent.log"

    agent = start_agent(config_file, log_file)
    try:
        staged = wait_for(
            lambda: any(p.name.startswith(".restore-") and any(p.iterdir()) for p in target.iterdir()),
            60,
            0.01,
        )
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert staged, log_file.read_text()
    assert [p.name for p in target.iterdir() if p.name.startswith(".restore-")], "the kill came too late"
    assert not portal.completes(first["id"])  # it never finished
    assert StagingRecord(cfg.state_path).entries()  # the agent wrote down where it staged

    second = restore_job("files", {"paths": [str(data)]}, storage_root, backup_ref(backup), str(target))
    portal.queued = [second]
    agent = start_agent(config_file, log_file)
    try:
        assert wait_for(lambda: portal.completes(second["id"]), 120), log_file.read_text()
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)

    report = portal.completes(second["id"])[0]
    assert report["status"] == "succeeded", report
    assert leftovers(target) == []
    assert (target / str(data).lstrip("/") / "d039" / "f0499.txt").read_bytes() == b"499\n" * 50
    assert StagingRecord(cfg.state_path).entries() == []
    assert "removed stale staging folder" in log_file.read_text()


# --- 3. the spool timer -----------------------------------------------------------


def test_a_report_reaches_the_portal_seconds_after_it_is_back_despite_a_long_poll_backoff(
    portal: FakePortal, storage_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(runner, "BACKOFF_BASE", 600.0)  # the poll would wait 5 to 10 minutes
    job = backup_job("command", {"backup_argv": [tool("sleep"), "1"]}, storage_root)
    portal.queued = [job]
    agent = Agent(
        config(
            server=portal.url,
            spool_dir=str(tmp_path / "spool"),
            poll_after=1,
            allow=AllowList().added(allow_for(job)),
        )
    )
    loop = threading.Thread(target=agent.run_forever)
    loop.start()
    try:
        assert wait_for(lambda: agent.running() == [job["id"]], 10)
        portal.down = True  # the outage starts while the job runs
        assert wait_for(lambda: Spool(tmp_path / "spool").pending() and not agent.running(), 15)
        time.sleep(1.5)  # the poll has failed by now and backs off for minutes
        polls = len(portal.calls("poll"))

        portal.down = False
        back = time.monotonic()
        assert wait_for(lambda: portal.completes(job["id"]), 10)
        delivered_after = time.monotonic() - back
    finally:
        agent.shutdown()
        loop.join(10)

    assert delivered_after < runner.SPOOL_RETRY_CAP + 1
    assert len(portal.calls("poll")) == polls  # delivered by the spool timer, not the next poll
    assert portal.completes(job["id"])[0]["status"] == "succeeded"
    assert {"started_at", "finished_at"} <= set(portal.completes(job["id"])[0])
    assert Spool(tmp_path / "spool").pending() == []


def test_spool_retry_delay_is_short_and_capped():
    assert runner.spool_retry_delay(0, 5.0) == 5.0
    assert runner.spool_retry_delay(1, 1.0, rand=lambda: 1.0) == 1.0
    assert runner.spool_retry_delay(3, 1.0, rand=lambda: 1.0) == 4.0
    assert runner.spool_retry_delay(50, 5.0, rand=lambda: 1.0) == runner.SPOOL_RETRY_CAP


# --- 4. one agent, one host --------------------------------------------------------


def test_the_instance_id_lives_in_the_state_folder_and_is_sent_in_enrol_and_poll(
    portal: FakePortal, tmp_path: Path
):
    config_file = tmp_path / "etc" / "config.json"
    assert (
        main(
            [
                "enrol",
                "--server",
                portal.url,
                "--token",
                "enrol-me",
                "--config",
                str(config_file),
                "--spool-dir",
                str(tmp_path / "var" / "spool"),
            ]
        )
        == 0
    )
    id_file = tmp_path / "var" / "instance-id"
    instance_id = id_file.read_text().strip()
    assert len(instance_id) == 32 and int(instance_id, 16) >= 0
    assert stat.S_IMODE(id_file.stat().st_mode) == 0o600
    assert instance_id not in config_file.read_text()
    [enrolled] = portal.calls("enrol")
    assert set(enrolled["instance"]) == {"id", "host"} and enrolled["instance"]["id"] == instance_id

    assert Agent(load(config_file)).run_once() == 0
    [polled] = portal.calls("poll")
    assert polled["instance"] == enrolled["instance"]

    # The same config copied to another server, whose state folder is its own.
    copied = json.loads(config_file.read_text())
    copied["state_dir"] = str(tmp_path / "other-host")
    other = Agent(load_from(copied, tmp_path / "copy.json"))
    other.run_once()
    assert portal.calls("poll")[-1]["instance"]["id"] not in (instance_id, "")
    assert read_or_create_instance_id(tmp_path / "var") == instance_id  # stable


def load_from(data: dict, path: Path):
    path.write_text(json.dumps(data))
    os.chmod(path, 0o600)
    return load(path)


def test_a_cloned_agent_says_so_runs_nothing_and_keeps_its_reports(
    portal: FakePortal,
    storage_root: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(runner, "CLONED_RETRY", 0.2)
    job = backup_job("command", {"backup_argv": [tool("echo"), "hi"]}, storage_root)
    portal.queued = [job]
    portal.cloned = True
    spool = Spool(tmp_path / "spool")
    agent = Agent(
        config(
            server=portal.url,
            spool_dir=str(tmp_path / "spool"),
            poll_after=1,
            allow=AllowList().added(allow_for(job)),
        )
    )
    loop = threading.Thread(target=agent.run_forever)
    loop.start()
    try:
        assert wait_for(lambda: len(portal.calls("poll")) >= 3, 10)  # keeps asking
        assert portal.completes(job["id"]) == [] and portal.queued == [job]  # ran nothing
        assert "copied from another host" in caplog.text and "--force" in caplog.text
        spool.put(77, {"status": "succeeded"})  # written before the portal said "cloned"
        time.sleep(1.5)  # past the spool timer's interval: not sent while cloned
        assert [e.job_id for e in spool.pending()] == [77] and portal.completes(77) == []

        portal.cloned = False  # re-keyed
        assert wait_for(lambda: portal.completes(job["id"]) and portal.completes(77), 10)
    finally:
        agent.shutdown()
        loop.join(10)
    assert spool.pending() == []


def test_a_report_answered_409_agent_cloned_stays_in_the_spool(portal: FakePortal, tmp_path: Path):
    client = PortalClient(portal.url, portal.agent_token)
    portal.cloned = True

    def answer(handler, path, body):
        from .fakeportal import _answer

        _answer(handler, 409, {"code": "agent_cloned", "detail": "copied"})

    portal.handle = answer  # type: ignore[method-assign]
    with pytest.raises(Exception) as refused:
        client.complete(5, {"status": "succeeded"})
    assert getattr(refused.value, "code", None) == "agent_cloned"


def test_staging_names_are_recognised():
    assert files.is_staging_name(".restore-53-0123abcd")
    assert files.is_staging_name(".partial-job-7")
    assert not files.is_staging_name(".restore-x") and not files.is_staging_name("job-7")
