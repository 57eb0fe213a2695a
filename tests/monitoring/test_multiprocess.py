"""Under gunicorn, with PROMETHEUS_MULTIPROC_DIR, the latency histogram adds up every worker's requests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WORKER = """
from portal.metrics import latency
latency.REQUEST_SECONDS.labels("GET", "healthz", "2xx").observe(0.01)
"""
READER = """
from prometheus_client import generate_latest
from portal.metrics import latency
assert latency.multiprocess_mode()
print(generate_latest(latency.registry()).decode())
"""


def run(code: str, folder: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_workers_latency_is_summed_whichever_worker_answers(tmp_path):
    for _ in range(3):  # three worker processes, one request each
        run(WORKER, tmp_path)
    body = run(READER, tmp_path)
    line = next(
        line for line in body.splitlines()
        if line.startswith("backup_portal_http_request_duration_seconds_count{")
    )  # fmt: skip
    assert 'route="healthz"' in line
    assert line.endswith(" 3.0")
