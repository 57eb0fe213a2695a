"""Recovery-point index benchmarks (issue #14): size, backup throughput, folder listing, search.

    .venv/bin/python bench/file_index.py backup --entries 1000000     # size and throughput
    .venv/bin/python bench/file_index.py api                          # listing and search at the API

**backup** generates a tree of ``--entries`` entries (folders and small files with
random content, names and times; kept in ``--tree`` for the next run), then backs it
up with the agent's own backup path (``Executor._backup``: plugin, storage writer,
SHA-256, fsync, atomic rename) ``--rounds`` times per variant, alternating, each run in
its own process, after reading the tree once to warm the page cache (``--storage-dir
/dev/shm`` keeps the disk out of the comparison: the index costs CPU, not I/O).
*before* is the agent of ``--before`` (a git revision, default the commit before the
index existed), *indexed* is this tree's agent. It reports entries/s,
MiB/s, the ratio (target ≥ 0.9), the index's bytes per entry (target ≤ 30) and each
process's peak RSS.

**api** builds a synthetic 1,000,000-entry index and 30 indexes of 100,000 entries
with the agent's IndexWriter, records them as recovery points in a scratch SQLite
catalog, and times the public API in-process (Django test client, a signed-in
owner, DEBUG off): ``GET /api/v1/backups/{id}/files/?path=…`` on folders of
different sizes and depths (target < 300 ms), and ``GET /api/v1/clients/{id}/files/
?name=…`` across the 30 points (target < 2 s). The first request of each is cold
(the process opens the file); the median of the next ones is warm.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE = "bb4da86"  # main before issue #14: the agent without an index
WORDS = ["invoice", "report", "photo", "scan", "contract", "backup", "export", "ledger", "order", "receipt"]
EXTS = ("pdf", "jpg", "txt", "csv", "json", "xlsx", "log")


# --- the tree -------------------------------------------------------------------------------


def generate_tree(root: Path, entries: int, *, seed: int = 14) -> int:
    """Folders 10 × 10 × 10 deep and wide, the rest small files (0–4 KiB) spread over the leaves."""
    rng = random.Random(seed)
    block = os.urandom(1 << 20)
    root.mkdir(parents=True)
    leaves = []
    for a in range(10):
        for b in range(10):
            for c in range(10):
                leaf = root / f"{WORDS[a]}-{a}" / f"20{16 + b}" / f"{c + 1:02d}-{WORDS[c]}"
                leaf.mkdir(parents=True, exist_ok=True)
                leaves.append(leaf)
    files = entries - 1 - 10 - 100 - 1000  # the root itself and the folders are entries too
    now = time.time()
    for i in range(files):
        leaf = leaves[i % len(leaves)]
        name = f"{rng.choice(WORDS)}-{i:07d}-{rng.getrandbits(24):06x}.{rng.choice(EXTS)}"
        size = rng.randrange(0, 4096)
        offset = rng.randrange(0, len(block) - size)
        path = leaf / name
        path.write_bytes(block[offset : offset + size])
        when = now - rng.randrange(0, 3 * 365 * 86400)
        os.utime(path, (when, when))
    return entries


# --- one backup, in its own process ------------------------------------------------------------

RUN_ONE = r"""
import json, resource, sys, time
from types import SimpleNamespace
sys.path.insert(0, sys.argv[1])
from backup_agent.context import JobContext
from backup_agent.executor import Executor
from backup_agent.jobs import parse
try:  # what `backup-agent run` does first, where the agent has it
    from backup_agent.memory import keep_freed_memory
    keep_freed_memory()
except ImportError:
    pass
tree, storage, job_id = sys.argv[2], sys.argv[3], int(sys.argv[4])

class Progress:
    def phase(self, total): pass
    def add(self, n): pass

executor = Executor.__new__(Executor)
executor.config = SimpleNamespace(hostname="bench")
raw = {"id": job_id, "kind": "backup", "client": {"id": 1, "name": "bench", "application": "bench",
       "plugin": "files", "options": {"paths": [tree]}},
       "storage": {"kind": "filesystem", "root": storage, "compression": "none"},
       "destination": f"bench/bench/job-{job_id}"}
started = time.perf_counter()
report = executor._backup(parse(raw), JobContext(job_id=job_id, client="bench"), Progress(), "")
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
facts = report["manifest"]["facts"]
print(json.dumps({"seconds": seconds, "size": report["size"], "members": facts["members"],
                  "index": report.get("index"), "peak_rss": peak}))
"""


def run_backup(code: Path, tree: Path, storage: Path, job_id: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", RUN_ONE, str(code), str(tree), str(storage), str(job_id)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(storage / "bench" / "bench" / f"job-{job_id}")
    return result


def warm(tree: Path) -> None:
    """Read the whole tree once, so that no run pays for the disk the others do not."""
    started = time.perf_counter()
    for folder, _, names in os.walk(tree):
        for name in names:
            with open(os.path.join(folder, name), "rb") as fh:
                while fh.read(1 << 20):
                    pass
    print(f"warmed the page cache in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def backup_benchmark(args: argparse.Namespace) -> None:
    tree = Path(args.tree)
    if not tree.exists():
        started = time.perf_counter()
        generate_tree(tree, args.entries)
        print(f"generated {args.entries:,} entries in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    warm(tree)
    before = Path(tempfile.mkdtemp(prefix="bp-before-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before],
                   check=True, capture_output=True)
    storage = Path(tempfile.mkdtemp(prefix="bp-bench-storage-", dir=args.storage_dir))
    results: dict[str, list[dict]] = {"before": [], "indexed": []}
    try:
        for round_ in range(args.rounds):
            for label, code in (("before", before), ("indexed", REPO)):
                result = run_backup(code, tree, storage, 1000 + round_ * 2 + (label == "indexed"))
                results[label].append(result)
                print(f"{label}: {result['seconds']:.1f} s", file=sys.stderr)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], check=False)
        shutil.rmtree(storage, ignore_errors=True)
    best = {label: min(runs, key=lambda r: r["seconds"]) for label, runs in results.items()}
    entries = best["indexed"]["members"]
    index = best["indexed"]["index"] or {}
    print(f"\nTree: {entries:,} entries, {best['indexed']['size'] / 2**20:,.0f} MiB of tar stream; "
          f"best of {args.rounds} runs each, alternating.\n")
    print("| agent | seconds | entries/s | MiB/s | index | bytes/entry (target ≤ 30) | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for label in ("before", "indexed"):
        r = best[label]
        size = (r["index"] or {}).get("size")
        index_cells = f"{size / 2**20:.1f} MiB | {size / r['members']:.1f}" if size else "— | —"
        print(
            f"| {label} | {r['seconds']:.1f} | {r['members'] / r['seconds']:,.0f} | "
            f"{r['size'] / 2**20 / r['seconds']:,.1f} | {index_cells} | {r['peak_rss'] / 2**20:.1f} MiB |"
        )
    ratio = best["before"]["seconds"] / best["indexed"]["seconds"]
    print(f"\nThroughput with the index / before: **{ratio:.2f}** (target ≥ 0.9); "
          f"index {index.get('size', 0) / max(entries, 1):.1f} bytes per entry.")
    print("All runs (s): " + "; ".join(
        f"{label} " + ", ".join(f"{r['seconds']:.1f}" for r in runs) for label, runs in results.items()
    ))


# --- the API ------------------------------------------------------------------------------------


def write_index(path: Path, folders: list[tuple[bytes, int]], rng: random.Random) -> int:
    """An index of the given folders (relative path, number of files each), as the files plugin writes it."""
    sys.path.insert(0, str(REPO))
    from backup_agent.file_index import IndexWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    with open(path, "wb") as fh:
        writer = IndexWriter(fh, "files")
        writer.begin_run(None)
        top = writer.add(b"srv/data", b"d", 0o755, 0, now)
        # One level of folders under the top, each a run of its files.
        writer.begin_run(top)
        numbers = [writer.add(name, b"d", 0o755, 0, now) for name, _ in folders]
        for number, (_, files) in zip(numbers, folders, strict=True):
            writer.begin_run(number)
            for i in range(files):
                name = f"{rng.choice(WORDS)}-{i:07d}.{rng.choice(EXTS)}".encode()
                writer.add(name, b"-", 0o644, rng.randrange(0, 1 << 20), now - rng.randrange(0, 10**8))
        return writer.close()["entries"]


def timed(client, url: str, repeats: int) -> tuple[float, float, dict]:
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        response = client.get(url, secure=True)  # production settings redirect plain HTTP
        times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.content[:300]!r}")
    return times[0], statistics.median(times[1:]), response.json()


def api_benchmark(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bp-bench-index-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{work / 'catalog.sqlite3'}",
        DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_INDEX_ROOT=str(work / "indexes"),
        SECRET_KEY="bench-" + "x" * 50,
        ALLOWED_HOSTS="testserver",
    )
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    import logging

    logging.disable(logging.WARNING)  # sign-in and static-files chatter
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    call_command("migrate", verbosity=0)
    from bench.file_index_catalog import make_points

    rng = random.Random(14)
    owner, big, client_30, points = make_points(work, rng, write_index)
    http = Client()
    http.force_login(owner)
    print(f"\nAPI in-process; cold: the process's first request; warm: median of {args.repeats}.\n")
    print("| request | entries | answer | cold ms | warm ms |")
    print("|---|---|---|---|---|")
    for label, path in (
        ("top folder (implied /srv)", "/srv"),
        ("folder of 1,000 folders", "/srv/data"),
        ("folder of 1,000 files, page 1", "/srv/data/folder-0500"),
        ("folder of 100,000 files, last page", "/srv/data/big-folder&page=2000"),
    ):
        cold, warm, body = timed(http, f"/api/v1/backups/{big.pk}/files/?path={path}", args.repeats)
        answer = f"{len(body['results'])} of {body.get('count', '?'):,}"
        timing = f"{cold * 1000:.0f} | {warm * 1000:.1f}"
        print(f"| listing {label} | {big.index_entries:,} | {answer} | {timing} |")
    total = sum(p.index_entries for p in points)
    for label, name in (("glob", "invoice-00000[0-2]*.pdf"), ("plain text, no match", "nothing-here")):
        cold, warm, body = timed(http, f"/api/v1/clients/{client_30.pk}/files/?name={name}", args.repeats)
        versions = sum(len(r["versions"]) for r in body["results"])
        answer = f"{body.get('count', len(body['results'])):,} paths, {versions:,} versions on page 1"
        print(f"| search `{name}` ({label}), 30 points | {total:,} | {answer} | "
              f"{cold * 1000:.0f} | {warm * 1000:.0f} |")
    sizes = [p.index_size_bytes / p.index_entries for p in [big, *points]]
    print(f"\nIndex size: {min(sizes):.1f}–{max(sizes):.1f} bytes per entry (synthetic names).")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    backup = sub.add_parser("backup")
    backup.add_argument("--entries", type=int, default=1_000_000)
    backup.add_argument("--tree", default=str(Path(tempfile.gettempdir()) / "bp-bench-tree-1m"))
    backup.add_argument("--storage-dir", default=tempfile.gettempdir())
    backup.add_argument("--rounds", type=int, default=2)
    backup.add_argument("--before", default=BEFORE)
    api = sub.add_parser("api")
    api.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if args.command == "backup":
        backup_benchmark(args)
    else:
        api_benchmark(args)


if __name__ == "__main__":
    main()
