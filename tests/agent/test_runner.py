"""The agent loop against a fake portal: poll, run, progress, cancel, report, spool."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest

from backup_agent import PROTOCOL_VERSION, upgrade
from backup_agent.client import PortalClient
from backup_agent.runner import BACKOFF_CAP, backoff_delay
from backup_agent.spool import Spool

from .fakeportal import FakePortal
from .helpers import agent_for, backup_job, tool


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PortalClient, "RETRY_DELAY", 0.01)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def command_job(storage_root: Path, argv: list[str]) -> dict:
    return backup_job("command", {"backup_argv": [tool(argv[0]), *argv[1:]]}, storage_root)


def test_run_once_executes_a_backup_and_reports_its_checksum(
    portal: FakePortal, storage_root: Path, spool_dir: Path, tmp_path: Path
):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file.txt").write_text("payload\n")
    job = backup_job("files", {"paths": [str(tmp_path / "data")]}, storage_root, "gzip")
    portal.queued = [job]

    assert agent_for(portal.url, spool_dir, job).run_once() == 0

    [report] = portal.completes(job["id"])
    stored = (storage_root / job["destination"] / "data.tar.gz").read_bytes()
    assert report["status"] == "succeeded"
    assert report["sha256"] == hashlib.sha256(stored).hexdigest()
    assert report["stored_size"] == len(stored) and report["size"] == 10240  # one member plus tar padding
    assert report["location"] == job["destination"] and report["compression"] == "gzip"
    assert report["manifest"]["facts"]["members"] == 2
    [poll] = portal.calls("poll")
    assert poll["running"] == [] and {"files", "postgresql", "mysql", "command"} <= set(poll["plugins"])
    assert Spool(spool_dir).pending() == []


def test_failed_reports_carry_their_error_class_and_protocol(
    portal: FakePortal, storage_root: Path, spool_dir: Path
):
    unreachable = command_job(
        storage_root,
        ["sh", "-c", "echo 'pg_dump: error: connection to server failed: Connection refused' >&2; exit 1"],
    )
    refused = command_job(storage_root, ["echo", "not in the allow-list"])
    portal.queued = [unreachable, refused]

    assert agent_for(portal.url, spool_dir, unreachable).run_once() == 0  # grants sh, not echo

    [report] = portal.completes(unreachable["id"])
    assert report["status"] == "failed" and report["error_class"] == "database_unreachable"
    assert report["error"] == (
        "sh failed (exit status 1): connection refused: "
        "pg_dump: error: connection to server failed: Connection refused"
    )
    assert "Connection refused" in report["log_tail"] and report["protocol"] == PROTOCOL_VERSION == 4
    [report] = portal.completes(refused["id"])
    assert report["error_class"] == "refused_by_agent" and report["error"].startswith("refused by agent:")
    [poll] = portal.calls("poll")
    assert poll["protocol"] == PROTOCOL_VERSION


def test_a_report_spooled_before_an_upgrade_is_resent_as_it_was_written(portal: FakePortal, spool_dir: Path):
    old = {"status": "failed", "error": "tar: /srv: Cannot open: Permission denied", "log_tail": ""}
    Spool(spool_dir).put(78, old)

    assert agent_for(portal.url, spool_dir).run_once() == 0

    assert portal.completes(78) == [old]  # no error_class, no protocol: the portal classifies its text


def test_report_refused_with_500_is_retried_until_acknowledged(
    portal: FakePortal, storage_root: Path, spool_dir: Path
):
    job = command_job(storage_root, ["echo", "hello"])
    portal.queued = [job]
    portal.complete_answers = ["500"]

    assert agent_for(portal.url, spool_dir, job).run_once() == 0

    first, second = portal.completes(job["id"])
    assert first == second and second["status"] == "succeeded"
    assert Spool(spool_dir).pending() == []


def test_report_stays_spooled_while_the_portal_fails_and_is_resent_next_time(
    portal: FakePortal, storage_root: Path, spool_dir: Path
):
    job = command_job(storage_root, ["echo", "hello"])
    portal.queued = [job]
    portal.complete_answers = ["500", "drop", "500"]  # every in-line try fails
    agent = agent_for(portal.url, spool_dir, job)

    assert agent.run_once() == 1
    [entry] = Spool(spool_dir).pending()
    assert entry.job_id == job["id"] and entry.report["status"] == "succeeded"

    assert agent.run_once() == 0  # resends the spool first, then polls (nothing new)
    assert Spool(spool_dir).pending() == []
    reports = portal.completes(job["id"])
    assert len(reports) == 4 and reports[-1] == reports[0]


def test_unreachable_portal_leaves_spooled_reports_in_place(spool_dir: Path):
    Spool(spool_dir).put(77, {"status": "succeeded", "sha256": "ab" * 32})
    agent = agent_for(closed_port_url(), spool_dir)

    assert agent.run_once() == 1

    [entry] = Spool(spool_dir).pending()
    assert entry.job_id == 77 and entry.report["sha256"] == "ab" * 32


def test_lease_lost_409_drops_the_spool_entry(portal: FakePortal, storage_root: Path, spool_dir: Path):
    job = command_job(storage_root, ["echo", "late"])
    portal.queued = [job]
    portal.complete_answers = ["409"]

    assert agent_for(portal.url, spool_dir, job).run_once() == 0

    assert len(portal.completes(job["id"])) == 1
    assert Spool(spool_dir).pending() == []


def test_progress_is_posted_while_a_job_runs(portal: FakePortal, storage_root: Path, spool_dir: Path):
    job = command_job(storage_root, ["sh", "-c", "head -c 100000 /dev/zero; sleep 0.6"])
    portal.queued = [job]

    assert agent_for(portal.url, spool_dir, job, progress_interval=0.05).run_once() == 0

    posts = portal.calls(f"jobs/{job['id']}/progress")
    assert len(posts) >= 3
    assert all(isinstance(p["bytes_done"], int) for p in posts) and posts[-1]["bytes_done"] == 100000


def test_progress_follows_the_cadence_the_portal_asks_for(portal: FakePortal, storage_root: Path, spool_dir):
    """Configured at 0.05 s, told 1 s by the portal: after the first report, one a second."""
    job = command_job(storage_root, ["sh", "-c", "sleep 1.6"])
    portal.queued = [job]
    portal.report_after = 1

    assert agent_for(portal.url, spool_dir, job, progress_interval=0.05).run_once() == 0

    assert 2 <= len(portal.calls(f"jobs/{job['id']}/progress")) <= 3


@pytest.mark.parametrize("report_after", [0, 0.001, 301, 10**9, True, "5", None, [30]])
def test_a_cadence_out_of_bounds_or_malformed_is_ignored(report_after):
    from backup_agent.progress import ProgressReporter

    reporter = ProgressReporter.__new__(ProgressReporter)
    reporter.interval = 5.0
    reporter.follow_cadence(report_after)
    assert reporter.interval == 5.0


def test_cancel_from_the_portal_stops_the_job_and_reports_it_failed(
    portal: FakePortal, storage_root: Path, spool_dir: Path
):
    job = command_job(storage_root, ["sleep", "30"])
    portal.queued = [job]
    portal.cancel = {job["id"]}
    started = time.monotonic()

    assert agent_for(portal.url, spool_dir, job, progress_interval=0.05).run_once() == 0

    assert time.monotonic() - started < 10
    [report] = portal.completes(job["id"])
    assert report["status"] == "failed" and report["error"] == "cancelled by the portal"
    assert report["error_class"] == "unknown"  # the portal knows it asked; it records a cancel
    assert list((storage_root / "orders" / "app01-data").iterdir()) == []  # no partial left


def test_bad_jobs_are_reported_failed_or_ignored(portal: FakePortal, storage_root: Path, spool_dir: Path):
    bad_kind = command_job(storage_root, ["echo"]) | {"kind": "defragment"}
    unknown_plugin = backup_job("oracle", {}, storage_root)
    portal.queued = [bad_kind, unknown_plugin, {"kind": "backup"}]

    assert agent_for(portal.url, spool_dir, bad_kind).run_once() == 0

    [bad_kind_report] = portal.completes(bad_kind["id"])
    [unknown_plugin_report] = portal.completes(unknown_plugin["id"])
    assert "job kind 'defragment'" in bad_kind_report["error"]
    assert "plugin 'oracle' is not known" in unknown_plugin_report["error"]
    assert bad_kind_report["error_class"] == unknown_plugin_report["error_class"] == "invalid_job"


def test_backoff_is_exponential_capped_and_jittered():
    assert backoff_delay(1, rand=lambda: 1.0) == 5.0
    assert backoff_delay(3, rand=lambda: 1.0) == 20.0
    assert backoff_delay(30, rand=lambda: 1.0) == BACKOFF_CAP
    assert backoff_delay(30, rand=lambda: 0.0) == BACKOFF_CAP / 2
    assert len({backoff_delay(4) for _ in range(20)}) > 1


def test_loop_reports_running_jobs_and_stops_them_on_shutdown(
    portal: FakePortal, storage_root: Path, spool_dir: Path
):
    job = command_job(storage_root, ["sleep", "30"])
    portal.queued = [job]
    portal.poll_after = 1
    agent = agent_for(portal.url, spool_dir, job)
    loop = threading.Thread(target=agent.run_forever)
    loop.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(p["running"] == [job["id"]] for p in portal.calls("poll")):
        time.sleep(0.05)

    agent.shutdown()
    loop.join(10)

    assert not loop.is_alive()
    assert any(p["running"] == [job["id"]] for p in portal.calls("poll"))  # heartbeat while busy
    [report] = portal.completes(job["id"])
    assert report["status"] == "failed" and "shutting down" in report["error"]
    assert report["error_class"] == "unknown"
    assert Spool(spool_dir).pending() == []


def test_loop_keeps_going_while_the_portal_is_unreachable(spool_dir: Path):
    agent = agent_for(closed_port_url(), spool_dir)
    loop = threading.Thread(target=agent.run_forever)
    loop.start()
    time.sleep(0.3)
    assert loop.is_alive()
    agent.shutdown()
    loop.join(5)
    assert not loop.is_alive()


def test_a_finished_job_whose_report_is_still_spooled_is_listed_as_ours(portal: FakePortal, spool_dir: Path):
    Spool(spool_dir).put(78, {"status": "succeeded", "log_tail": ""})
    portal.complete_answers = ["500"] * 10  # the report cannot get through yet

    agent_for(portal.url, spool_dir).run_once()

    [poll] = portal.calls("poll")
    assert poll["running"] == [78]  # not re-queued by the portal while its report waits


def test_the_job_lock_is_held_from_the_claim_until_the_report_is_sent(
    portal: FakePortal, storage_root: Path, spool_dir: Path
):
    """`backup-agent upgrade` (jobs.lock, exclusive) never restarts the agent with a report in flight."""
    job = command_job(storage_root, ["echo", "hello"])
    portal.queued = [job]
    agent = agent_for(portal.url, spool_dir, job)
    state = agent.config.state_path
    seen: list[str] = []

    def upgrade_now() -> str:
        try:
            with upgrade.idle(state, wait=False):
                return "upgraded"
        except upgrade.JobRunning:
            return "refused"

    send_report = agent.send_report

    def sending(*args, **kwargs):
        seen.append(upgrade_now())  # the job's tools are done; its report is not sent yet
        return send_report(*args, **kwargs)

    agent.send_report = sending  # type: ignore[method-assign]
    started = threading.Event()
    execute = agent.executor.execute

    def executing(*args, **kwargs):
        started.wait(5)
        return execute(*args, **kwargs)

    agent.executor.execute = executing  # type: ignore[method-assign]
    [raw] = agent.poll()[0]
    thread = agent.start_job(raw)
    seen.append(upgrade_now())  # claimed, not yet executed
    started.set()
    thread.join(30)

    assert seen == ["refused", "refused"]
    assert portal.completes(job["id"])[0]["status"] == "succeeded"
    assert upgrade_now() == "upgraded"  # released once the report is acknowledged


def test_every_archive_a_running_job_reads_is_busy():
    """An incremental reads its base, a chain restore every member: removing one mid-job would lose it."""
    from backup_agent.runner import job_locations

    backup = {"destination": "web/job-9", "base": {"id": 8, "location": "web/job-8"}}
    restore = {
        "backup": {"id": 12, "location": "web/job-12"},
        "chain": [{"id": 10, "location": "web/job-10"}, {"id": 11, "location": "web/job-11"}],
    }

    assert job_locations(backup) == {"web/job-9", "web/job-8"}
    assert job_locations(restore) == {"web/job-12", "web/job-10", "web/job-11"}
    assert job_locations({"chain": "not a list", "base": 7}) == set()
