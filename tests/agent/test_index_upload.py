"""A backup's index goes to the portal (PUT jobs/<id>/index) before its report, and again on resend."""

from __future__ import annotations

import hashlib
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from backup_agent import PROTOCOL_VERSION, file_index
from backup_agent.client import PortalClient
from backup_agent.spool import Spool

from .fakeportal import PREFIX, FakePortal, _answer, _drop
from .helpers import agent_for, backup_job


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PortalClient, "RETRY_DELAY", 0.01)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


class Uploads:
    """The index uploads a portal received, and the answers it gives them (used up one per call)."""

    def __init__(self, portal: FakePortal) -> None:
        self.answers: list[str] = []
        self.bodies: dict[int, bytes] = {}
        uploads = self

        def do_put(handler: BaseHTTPRequestHandler) -> None:
            length = int(handler.headers["Content-Length"])
            body = handler.rfile.read(length)
            job_id = int(handler.path.removeprefix(PREFIX).split("/")[1])
            record = {
                "sha256": handler.headers.get("X-Index-SHA256"),
                "content_type": handler.headers.get("Content-Type"),
                "chunked": handler.headers.get("Transfer-Encoding"),
                "received_sha256": hashlib.sha256(body).hexdigest(),
            }
            with portal.lock:
                portal.requests.append((handler.path, record))
                mode = uploads.answers.pop(0) if uploads.answers else "ok"
            if handler.headers.get("Authorization") != f"Bearer {portal.agent_token}":
                return _answer(handler, 401, {"code": "unauthorized", "detail": "bad token"})
            if mode == "drop":
                return _drop(handler)
            if mode != "ok":
                codes = {"409": "lease_lost", "404": "not_found", "400": "bad_index", "500": "server_error"}
                return _answer(handler, int(mode), {"code": codes[mode], "detail": mode})
            uploads.bodies[job_id] = body
            _answer(handler, 200, {"stored": True})

        portal.server.RequestHandlerClass.do_PUT = do_put  # type: ignore[attr-defined]


@pytest.fixture
def uploads(portal: FakePortal) -> Uploads:
    return Uploads(portal)


def files_job(tmp_path: Path, storage_root: Path) -> dict:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for i in range(50):
        (data / "sub" / f"file-{i}.txt").write_text(f"{i}\n")
    return backup_job("files", {"paths": [str(data)]}, storage_root)


def endpoints(portal: FakePortal, job_id: int) -> list[str]:
    with portal.lock:
        return [path.rsplit("/", 1)[1] for path, _ in portal.requests if f"/jobs/{job_id}/" in path]


def test_the_index_is_uploaded_before_the_report(portal, uploads, storage_root, spool_dir, tmp_path):
    job = files_job(tmp_path, storage_root)
    portal.queued = [job]

    assert agent_for(portal.url, spool_dir, job).run_once() == 0

    assert [e for e in endpoints(portal, job["id"]) if e != "progress"] == ["index", "complete"]
    [report] = portal.completes(job["id"])
    stored = (storage_root / job["destination"] / file_index.FILE_NAME).read_bytes()
    assert uploads.bodies[job["id"]] == stored
    [put] = portal.calls(f"jobs/{job['id']}/index")
    assert put == {
        "sha256": report["index"]["sha256"],
        "content_type": "application/octet-stream",
        "chunked": None,  # a Content-Length body, streamed from the file
        "received_sha256": hashlib.sha256(stored).hexdigest(),
    }
    assert report["index"]["entries"] == 52 and report["protocol"] == PROTOCOL_VERSION == 4
    assert Spool(spool_dir).pending() == []


def test_a_spooled_report_uploads_its_index_again_when_resent(
    portal, uploads, storage_root, spool_dir, tmp_path
):
    job = files_job(tmp_path, storage_root)
    portal.queued = [job]
    uploads.answers = ["500", "drop", "500"]  # every in-line try fails: the portal is in trouble
    agent = agent_for(portal.url, spool_dir, job)

    assert agent.run_once() == 1
    assert portal.completes(job["id"]) == []  # never a report whose index the portal lacks
    [entry] = Spool(spool_dir).pending()
    index = storage_root / job["destination"] / file_index.FILE_NAME
    assert entry.index_file == str(index) and "index_file" not in entry.report
    raw = json.loads((spool_dir / f"{job['id']}.json").read_text())
    assert raw["index_file"] == str(index)

    assert agent.run_once() == 0

    [report] = portal.completes(job["id"])
    assert report["index"] == entry.report["index"]
    assert uploads.bodies[job["id"]] == index.read_bytes()
    assert Spool(spool_dir).pending() == []


@pytest.mark.parametrize("answer", ["400", "404"])
def test_a_refused_upload_still_completes_without_index(
    portal, uploads, storage_root, spool_dir, tmp_path, answer, caplog
):
    job = files_job(tmp_path, storage_root)
    portal.queued = [job]
    uploads.answers = [answer]

    assert agent_for(portal.url, spool_dir, job).run_once() == 0

    [report] = portal.completes(job["id"])
    assert report["status"] == "succeeded" and "index" not in report
    assert report["manifest"]["index"]["entries"] == 52  # the point still has it on storage
    assert len(portal.calls(f"jobs/{job['id']}/index")) == 1  # a 4xx is not retried
    assert "refused the index" in caplog.text
    assert Spool(spool_dir).pending() == []


def test_a_409_on_upload_drops_the_report_like_a_409_on_complete(
    portal, uploads, storage_root, spool_dir, tmp_path
):
    job = files_job(tmp_path, storage_root)
    portal.queued = [job]
    uploads.answers = ["409"]

    assert agent_for(portal.url, spool_dir, job).run_once() == 0

    assert portal.completes(job["id"]) == []
    assert Spool(spool_dir).pending() == []


def test_an_index_gone_before_the_resend_completes_without_it(
    portal, uploads, storage_root, spool_dir, tmp_path
):
    job = files_job(tmp_path, storage_root)
    portal.queued = [job]
    uploads.answers = ["drop"] * 3
    agent = agent_for(portal.url, spool_dir, job)
    assert agent.run_once() == 1

    (storage_root / job["destination"] / file_index.FILE_NAME).unlink()
    assert agent.run_once() == 0

    [report] = portal.completes(job["id"])
    assert report["status"] == "succeeded" and "index" not in report
    assert Spool(spool_dir).pending() == []


def test_reports_without_an_index_are_sent_as_before(portal, uploads, spool_dir):
    old = {"status": "succeeded", "sha256": "ab" * 32, "protocol": 2}
    Spool(spool_dir).put(79, old)

    assert agent_for(portal.url, spool_dir).run_once() == 0

    assert portal.completes(79) == [old]
    assert portal.calls("jobs/79/index") == []
