"""Issue #12: the archives this agent wrote, reported to the portal and removed when it says so."""

from __future__ import annotations

import json
import logging
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest

from backup_agent.allow import AllowList
from backup_agent.archives import ArchiveRecord, folder_size
from backup_agent.client import PortalClient
from backup_agent.config import ConfigError, parse
from backup_agent.runner import Agent
from backup_agent.spool import Spool

from .fakeportal import FakePortal
from .helpers import allow_for, backup_job, config, tool


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PortalClient, "RETRY_DELAY", 0.01)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "file.txt").write_text("payload\n" * 100)
    return folder


def make_agent(portal: FakePortal, tmp_path: Path, storage_root: Path, data: Path, **overrides) -> Agent:
    allow = AllowList.from_json(
        {"paths": [str(data)], "storage": [str(storage_root)], "commands": [tool("sh")]}
    )
    overrides.setdefault("allow", allow)
    return Agent(config(server=portal.url, spool_dir=str(tmp_path / "spool"), **overrides))


def back_up(agent: Agent, portal: FakePortal, storage_root: Path, data: Path) -> str:
    """Run one files backup through the agent; its location."""
    job = backup_job("files", {"paths": [str(data)]}, storage_root)
    portal.queued = [job]
    assert agent.run_once() == 0
    assert portal.completes(job["id"])[0]["status"] == "succeeded"
    return job["destination"]


def test_a_committed_backup_is_recorded_in_the_state_folder(
    portal: FakePortal, tmp_path: Path, storage_root: Path, data: Path
):
    agent = make_agent(portal, tmp_path, storage_root, data)
    location = back_up(agent, portal, storage_root, data)

    record = tmp_path / "archives.json"  # the state folder: the spool folder's parent
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert json.loads(record.read_text())["archives"] == [{"root": str(storage_root), "location": location}]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".archives.json.tmp")]

    # A failed backup commits nothing and records nothing.
    failing = backup_job("command", {"backup_argv": [tool("sh"), "-c", "exit 3"]}, storage_root)
    portal.queued = [failing]
    agent.run_once()
    assert portal.completes(failing["id"])[0]["status"] == "failed"
    assert [e["location"] for e in agent.archives.entries()] == [location]


def test_the_record_is_bounded_and_keeps_the_newest(tmp_path: Path):
    record = ArchiveRecord(tmp_path, limit=3)
    for n in range(5):
        record.add("/mnt/protection", f"orders/db01/job-{n}")
    record.add("/mnt/protection", "orders/db01/job-2")  # recorded again: moves to the end, once
    assert [e["location"] for e in record.entries()] == [
        "orders/db01/job-3",
        "orders/db01/job-4",
        "orders/db01/job-2",
    ]


def test_archives_are_reported_on_the_first_poll_then_only_after_the_interval(
    portal: FakePortal, tmp_path: Path, storage_root: Path, data: Path
):
    agent = make_agent(portal, tmp_path, storage_root, data, archive_report_interval=1.0)
    location = back_up(agent, portal, storage_root, data)
    # run_once polled before the backup ran: the first poll's report is empty, not absent.
    assert portal.polls()[0]["archives"] == []

    agent.poll()  # at once: not an archive report, so no key at all
    assert "archives" not in portal.polls()[1]

    time.sleep(1.1)
    agent.poll()
    size = folder_size(storage_root / location)
    assert portal.polls()[2]["archives"] == [{"location": location, "size": size}]
    agent.poll()
    assert "archives" not in portal.polls()[3]

    # A new agent process (a restart) reports at its first poll whatever the interval.
    restarted = make_agent(portal, tmp_path, storage_root, data)
    restarted.poll()
    assert portal.polls()[4]["archives"] == [{"location": location, "size": size}]
    restarted.poll()
    assert "archives" not in portal.polls()[5]


def test_a_report_fails_with_its_poll_and_goes_with_the_next_one(
    tmp_path: Path, storage_root: Path, data: Path
):
    portal = FakePortal(down=True).start()
    try:
        agent = make_agent(portal, tmp_path, storage_root, data)
        agent.archives.add(str(storage_root), "orders/app01-data/job-1")
        (storage_root / "orders/app01-data/job-1").mkdir(parents=True)
        with pytest.raises(Exception):  # noqa: B017,PT011 - unreachable, whichever way it says so
            agent.poll()
        portal.down = False
        agent.poll()
        assert portal.polls()[-1]["archives"] == [{"location": "orders/app01-data/job-1", "size": 0}]
    finally:
        portal.stop()


def test_sizes_are_the_sum_of_the_files_and_a_vanished_folder_is_dropped(
    portal: FakePortal, tmp_path: Path, storage_root: Path, data: Path
):
    agent = make_agent(portal, tmp_path, storage_root, data)
    first = back_up(agent, portal, storage_root, data)
    second = back_up(agent, portal, storage_root, data)
    folder = storage_root / second
    expected = sum(p.stat().st_size for p in folder.iterdir())
    assert expected == folder_size(folder) and expected > 10240  # the tar and its manifest

    shutil.rmtree(storage_root / first)  # expired by the portal, or removed by hand
    assert agent.archives.report() == [{"location": second, "size": expected}]
    assert [e["location"] for e in agent.archives.entries()] == [second]


def test_an_unmounted_storage_root_drops_nothing(tmp_path: Path):
    record = ArchiveRecord(tmp_path / "state")
    empty_root = tmp_path / "mnt"  # a mount point whose share is away: an empty folder
    empty_root.mkdir()
    record.add(str(empty_root), "orders/db01/job-1")
    record.add(str(tmp_path / "missing"), "orders/db01/job-2")
    assert record.report() == []
    assert len(record.entries()) == 2
    # Nor does a removal: the folder is away, not gone.
    allow = AllowList.from_json({"storage": [str(empty_root)]})
    assert record.remove("orders/db01/job-1", allow).outcome == "failed"
    assert len(record.entries()) == 2


def test_the_portal_removes_a_recorded_archive(
    portal: FakePortal, tmp_path: Path, storage_root: Path, data: Path, caplog: pytest.LogCaptureFixture
):
    agent = make_agent(portal, tmp_path, storage_root, data)
    orphan = back_up(agent, portal, storage_root, data)
    kept = back_up(agent, portal, storage_root, data)
    portal.remove_archives = [orphan]

    with caplog.at_level(logging.INFO, logger="backup_agent.archives"):
        agent.poll()

    assert not (storage_root / orphan).exists()
    assert (storage_root / orphan).parent.is_dir()  # the client folder stays
    assert (storage_root / kept / "manifest.json").is_file()
    assert [e["location"] for e in agent.archives.entries()] == [kept]
    assert f"{orphan}: removed" in caplog.text

    # Asked again (the answer was lost, say): it is no longer ours, nothing happens.
    portal.remove_archives = [orphan]
    agent.poll()
    assert (storage_root / kept).is_dir()


def test_a_recorded_location_that_is_gone_is_just_dropped(
    portal: FakePortal, tmp_path: Path, storage_root: Path, data: Path, caplog: pytest.LogCaptureFixture
):
    agent = make_agent(portal, tmp_path, storage_root, data)
    location = back_up(agent, portal, storage_root, data)
    shutil.rmtree(storage_root / location)
    portal.remove_archives = [location]
    with caplog.at_level(logging.INFO, logger="backup_agent.archives"):
        agent.poll()
    assert agent.archives.entries() == []
    assert f"{location}: gone" in caplog.text


def test_unrecorded_or_escaping_locations_are_refused(
    portal: FakePortal, tmp_path: Path, storage_root: Path, data: Path, caplog: pytest.LogCaptureFixture
):
    agent = make_agent(portal, tmp_path, storage_root, data)
    ours = back_up(agent, portal, storage_root, data)
    # Another agent's backup on the same storage: on disk, but not in this agent's record.
    theirs = storage_root / "orders" / "other-client" / "job-999999"
    theirs.mkdir(parents=True)
    (theirs / "data.tar").write_bytes(b"x")
    # A tampered record: an entry that leads out of the storage root.
    canary = tmp_path / "outside" / "job-1"
    canary.mkdir(parents=True)
    (canary / "keep").write_text("keep")
    agent.archives.add(str(storage_root), "../outside/job-1")

    portal.remove_archives = [
        "../../etc",
        "/etc",
        "orders/other-client/job-999999",
        "../outside/job-1",
        42,
        None,
    ]
    with caplog.at_level(logging.INFO, logger="backup_agent.archives"):
        agent.poll()

    assert (theirs / "data.tar").is_file()
    assert (canary / "keep").is_file()
    assert (storage_root / ours).is_dir()
    assert "../../etc: refused (not an archive this agent wrote)" in caplog.text
    assert "orders/other-client/job-999999: refused (not an archive this agent wrote)" in caplog.text
    assert "../outside/job-1: refused (invalid options: storage location" in caplog.text
    assert "42: refused (not a location)" in caplog.text
    assert {e["location"] for e in agent.archives.entries()} == {ours, "../outside/job-1"}

    # The tampered entry is never reported (and forgotten); ours is.
    assert [a["location"] for a in agent.archives.report()] == [ours]
    assert [e["location"] for e in agent.archives.entries()] == [ours]

    # Not a list at all: ignored and logged.
    portal.remove_archives = "orders"  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="backup_agent.archives"):
        agent.poll()
    assert "ignoring remove_archives from the portal: not a list" in caplog.text
    assert (storage_root / ours).is_dir()


def test_a_symlink_pointing_outside_is_never_followed(
    portal: FakePortal, tmp_path: Path, storage_root: Path, data: Path, caplog: pytest.LogCaptureFixture
):
    agent = make_agent(portal, tmp_path, storage_root, data)
    first = back_up(agent, portal, storage_root, data)
    second = back_up(agent, portal, storage_root, data)
    outside = tmp_path / "outside"
    (outside / Path(first).name).mkdir(parents=True)
    (outside / Path(first).name / "keep").write_text("keep")
    # The client folder swapped for a symlink that leads out of the storage root.
    client_dir = storage_root / Path(first).parent
    moved = tmp_path / "moved-client"
    client_dir.rename(moved)
    client_dir.symlink_to(outside)

    portal.remove_archives = [first]
    with caplog.at_level(logging.INFO, logger="backup_agent.archives"):
        agent.poll()
    assert (outside / Path(first).name / "keep").is_file()
    assert (
        f"{first}: refused (invalid options: storage location {first!r} escapes the storage root)"
        in caplog.text
    )

    # The job folder itself a symlink (to another backup inside the root): not removed either.
    client_dir.unlink()
    moved.rename(client_dir)
    other = storage_root / "orders" / "elsewhere" / "job-5"
    other.mkdir(parents=True)
    shutil.rmtree(storage_root / second)
    (storage_root / second).symlink_to(other)
    portal.remove_archives = [second]
    with caplog.at_level(logging.INFO, logger="backup_agent.archives"):
        agent.poll()
    assert other.is_dir() and (storage_root / second).is_symlink()
    assert f"{second}: refused" in caplog.text and "is not a folder" in caplog.text


def test_a_storage_root_no_longer_allowed_is_refused(
    portal: FakePortal, tmp_path: Path, storage_root: Path, data: Path, caplog: pytest.LogCaptureFixture
):
    agent = make_agent(portal, tmp_path, storage_root, data)
    location = back_up(agent, portal, storage_root, data)
    agent.config.allow = AllowList.from_json({"paths": [str(data)]})  # the admin took the storage out

    portal.remove_archives = [location]
    with caplog.at_level(logging.INFO, logger="backup_agent.archives"):
        agent.poll()
    assert (storage_root / location).is_dir()
    assert [e["location"] for e in agent.archives.entries()] == [location]
    assert "is not in this server's allow-list" in caplog.text


def test_never_removed_while_a_job_of_this_agent_uses_it(
    portal: FakePortal, tmp_path: Path, storage_root: Path, data: Path, caplog: pytest.LogCaptureFixture
):
    agent = make_agent(portal, tmp_path, storage_root, data)
    location = back_up(agent, portal, storage_root, data)

    # Its report still in the spool (not acknowledged yet): busy.
    job_id = int(location.rsplit("-", 1)[1])
    Spool(tmp_path / "spool").put(job_id, {"status": "succeeded", "location": location})
    portal.remove_archives = [location]
    with caplog.at_level(logging.INFO, logger="backup_agent.archives"):
        agent.poll()
    assert (storage_root / location).is_dir()
    assert f"{location}: busy" in caplog.text
    Spool(tmp_path / "spool").remove(job_id)

    # A running job writing there (another attempt of that job): busy too.
    slow = backup_job("command", {"backup_argv": [tool("sh"), "-c", "sleep 1; echo data"]}, storage_root)
    slow["destination"] = location
    agent.config.allow = agent.config.allow.added(allow_for(slow))
    thread = agent.start_job(slow)
    assert isinstance(thread, threading.Thread)
    portal.remove_archives = [location]
    with caplog.at_level(logging.INFO, logger="backup_agent.archives"):
        agent.poll()
    assert caplog.text.count(f"{location}: busy") == 2
    assert (storage_root / location / "manifest.json").is_file()
    thread.join(30)
    assert portal.completes(slow["id"])[0]["status"] == "succeeded"

    # Idle again: now it goes.
    portal.remove_archives = [location]
    agent.poll()
    assert not (storage_root / location).exists()


def test_archive_report_interval_is_parsed_strictly():
    base = {"server": "https://portal.example", "agent_token": "t", "hostname": "h"}
    assert parse(base).archive_report_interval == 3600
    assert parse({**base, "archive_report_interval": 0.5}).archive_report_interval == 0.5
    for bad in ("60", True, 0, -1, float("nan"), float("inf"), None):
        with pytest.raises(ConfigError, match="archive_report_interval"):
            parse({**base, "archive_report_interval": bad})
    with pytest.raises(ConfigError, match="unknown keys"):
        parse({**base, "archive_report_intervall": 60})
