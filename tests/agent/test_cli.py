"""The `backup-agent` command: enrol, config file, status, run as a real process."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backup_agent import PROTOCOL_VERSION, __version__
from backup_agent.cli import main
from backup_agent.config import Config, ConfigError, config_path, load, parse

from .fakeportal import FakePortal
from .helpers import backup_job, tool

REPO = Path(__file__).resolve().parents[2]


def enrol(portal: FakePortal, tmp_path: Path, *extra: str) -> int:
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
            str(tmp_path / "etc" / "config.json"),
            "--spool-dir",
            str(tmp_path / "spool"),
            *extra,
        ]
    )


def test_enrol_writes_a_private_config_with_the_agent_token(portal: FakePortal, tmp_path: Path):
    assert enrol(portal, tmp_path) == 0

    path = tmp_path / "etc" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    cfg = load(path)
    assert (cfg.server, cfg.agent_token, cfg.hostname, cfg.agent_id) == (
        portal.url,
        portal.agent_token,
        "app01.test",
        7,
    )
    assert cfg.spool_dir == str(tmp_path / "spool") and cfg.poll_after == 30
    [body] = portal.calls("enrol")
    assert body["token"] == "enrol-me" and body["version"] == __version__ and "files" in body["plugins"]
    assert body["protocol"] == PROTOCOL_VERSION
    assert os.listdir(path.parent) == ["config.json"]  # no temporary file left behind


def test_enrol_refuses_to_replace_an_existing_config(portal: FakePortal, tmp_path: Path):
    assert enrol(portal, tmp_path) == 0
    before = (tmp_path / "etc" / "config.json").read_text()
    assert enrol(portal, tmp_path) == 2
    assert (tmp_path / "etc" / "config.json").read_text() == before


def test_enrol_with_a_used_token_fails_and_writes_nothing(portal: FakePortal, tmp_path: Path):
    portal.enrolment_tokens = set()
    assert enrol(portal, tmp_path) == 1
    assert not (tmp_path / "etc" / "config.json").exists()


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("BACKUP_AGENT_CONFIG", raising=False)
    assert config_path(None) == Path("/etc/backup-agent/config.json")
    monkeypatch.setenv("BACKUP_AGENT_CONFIG", "/opt/agent.json")
    assert config_path(None) == Path("/opt/agent.json")
    assert config_path("/x.json") == Path("/x.json")


@pytest.mark.parametrize(
    "change",
    [
        {"poll_afer": 30},
        {"poll_after": "30"},
        {"poll_after": True},
        {"agent_token": ""},
        {"server": "ftp://portal"},
        {"plugin_env": {"mysql": {"MYSQL_PWD": 1}}},
        {"max_parallel_jobs": 0},
    ],
)
def test_config_is_parsed_strictly(change):
    data = json.loads(Config(server="https://p", agent_token="t", hostname="h").to_json())
    with pytest.raises(ConfigError):
        parse({**data, **change})


def test_status_shows_config_and_spool_without_the_token(
    portal: FakePortal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    enrol(portal, tmp_path)
    (tmp_path / "spool" / "12.json").write_text(
        json.dumps({"job_id": 12, "spooled_at": time.time(), "report": {"status": "succeeded"}})
    )
    monkeypatch.setenv("BACKUP_AGENT_CONFIG", str(tmp_path / "etc" / "config.json"))
    capsys.readouterr()

    assert main(["status"]) == 0

    out = capsys.readouterr().out
    assert portal.url in out and "job 12: succeeded" in out and "1 report(s)" in out
    assert portal.agent_token not in out


def agent_process(config: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "backup_agent", "run", "--config", str(config), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_run_once_as_a_process(portal: FakePortal, tmp_path: Path, storage_root: Path):
    assert enrol(portal, tmp_path, "--allow-command", tool("echo"), "--allow-storage", str(storage_root)) == 0
    job = backup_job("command", {"backup_argv": [tool("echo"), "hi"]}, storage_root)
    portal.queued = [job]

    proc = agent_process(tmp_path / "etc" / "config.json", "--once")
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 0, err
    assert portal.completes(job["id"])[0]["status"] == "succeeded"
    assert portal.agent_token not in err


def test_sigterm_stops_the_loop_gracefully(portal: FakePortal, tmp_path: Path):
    assert enrol(portal, tmp_path) == 0
    proc = agent_process(tmp_path / "etc" / "config.json")
    deadline = time.monotonic() + 15
    while not portal.calls("poll") and time.monotonic() < deadline:
        time.sleep(0.05)

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)

    assert portal.calls("poll"), err
    assert proc.returncode == 0 and "received SIGTERM, stopping" in err


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and __version__ in capsys.readouterr().out
