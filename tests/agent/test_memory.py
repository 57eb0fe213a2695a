"""Memory stays flat: backing up (and restoring) 1 GiB keeps the agent under 100 MB RSS.

Runs in a fresh interpreter so that the peak RSS measured is the agent's own,
not pytest's. The file is sparse and the storage gzip-compressed, so the test
reads and hashes a full gibibyte without writing one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30
LIMIT_KB = 100 * 1024

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from tests.agent.helpers import backup_job, backup_ref, execute, restore_job

    def peak_rss_kb():
        # VmHWM, not getrusage: ru_maxrss survives exec and would include
        # the RSS of the pytest process this interpreter was forked from.
        with open("/proc/self/status") as fh:
            return int(fh.read().split("VmHWM:")[1].split()[0])

    big, root, target = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    backup = execute(backup_job("files", {"paths": [big]}, root, "gzip"))
    restore = execute(restore_job("files", {"paths": [big]}, root, backup_ref(backup), target))
    print(json.dumps({"backup": backup["status"], "restore": restore["status"], "size": backup.get("size"),
                      "rss_kb": peak_rss_kb(), "error": backup.get("error") or restore.get("error")}))
    """
)


def test_one_gibibyte_round_trip_keeps_rss_under_100_mb(tmp_path: Path, storage_root: Path):
    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "sparse.img", "wb") as fh:
        fh.truncate(GIB)
    target = tmp_path / "restored"

    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), str(storage_root), str(target)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["backup"], result["restore"]) == ("succeeded", "succeeded"), result["error"]
    assert result["size"] > GIB
    assert result["rss_kb"] < LIMIT_KB, f"peak RSS {result['rss_kb'] // 1024} MB"
    restored = target / str(folder).lstrip("/") / "sparse.img"
    assert restored.stat().st_size == GIB
