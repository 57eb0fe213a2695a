"""Incremental backups (issue #15): what an incremental reads, writes and takes, and what it saves.

    .venv/bin/python bench/incremental.py                      # all of it, on /dev/shm
    .venv/bin/python bench/incremental.py --days 30 --skip-week

A generated tree of ``--mib`` MiB in ``--files`` files (random content: no compression
flatters anything) is backed up with the agent's own code (``Executor._backup``,
``Executor._restore``), each backup in its own process so that ``/proc/self/io`` counts
exactly its reads and writes (``rchar``/``wchar``: every byte through read(2) and
write(2), page cache or not), after reading the tree once to warm the page cache.

**step**: a full, then 1 % of the files changed (a quarter each edited, added, deleted,
renamed), then an incremental: bytes read and written, and wall time, against the
full's (targets ≤ 2 % and ≤ 10 %).

**week**: six more days of 1 % change and an incremental each (seven in all); a
snapshot of the tree (every entry's type, mode, mtime, link target, and content
SHA-256) right after each backup; the 7th incremental restored from its chain into an
empty folder and compared with its snapshot, entry for entry and byte for byte.

**month**: ``--days`` days of 1 % daily change, backed up twice a day-step: a full
every day (fulls only), and a weekly full with incrementals. Storage used is the sum
of the points kept (retention longer than the window: nothing expires); written as a
table and as docs/images/incremental-storage.svg.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SVG = REPO / "docs" / "images" / "incremental-storage.svg"

RUN_ONE = r"""
import json, sys, time
from types import SimpleNamespace
sys.path.insert(0, sys.argv[1])
from backup_agent.context import JobContext
from backup_agent.executor import Executor
from backup_agent.jobs import parse
from backup_agent.memory import keep_freed_memory
keep_freed_memory()
raw = json.loads(sys.argv[2])

class Progress:
    def phase(self, total): pass
    def add(self, n): pass

def io():
    fields = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    return int(fields["rchar"]), int(fields["wchar"])

executor = Executor.__new__(Executor)
executor.config = SimpleNamespace(hostname="bench")
ctx = JobContext(job_id=raw["id"], client="bench")
spec = parse(raw)
read0, written0 = io()
started = time.perf_counter()
handler = executor._backup if raw["kind"] == "backup" else executor._restore
report = handler(spec, ctx, Progress(), "")
seconds = time.perf_counter() - started
read1, written1 = io()
print(json.dumps({"seconds": seconds, "read": read1 - read0, "written": written1 - written0,
                  "report": report, "log": ctx.log.text()}))
"""


# --- the tree -------------------------------------------------------------------------------


class Tree:
    """The generated tree and the 1 % daily change; everything from one seeded generator."""

    def __init__(self, root: Path, files: int, total: int, seed: int = 15) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.block = os.urandom(8 << 20)
        self.mean = total // files
        self.serial = 0
        root.mkdir(parents=True)
        for _ in range(files):
            self._new_file()
        # A few links, so that the chain has to carry them too.
        files_now = self.files()
        for i in range(20):
            os.symlink(os.path.relpath(files_now[i], self.root / "links"), self._link_path(f"sym{i}"))
            os.link(files_now[i + 20], self._link_path(f"hard{i}"))

    def _link_path(self, name: str) -> Path:
        folder = self.root / "links"
        folder.mkdir(exist_ok=True)
        return folder / name

    def _content(self) -> bytes:
        size = self.rng.randrange(self.mean // 4, self.mean * 7 // 4)
        at = self.rng.randrange(0, len(self.block) - size)
        return self.block[at : at + size]

    def _new_file(self) -> None:
        folder = self.root / f"d{self.rng.randrange(10):02d}" / f"s{self.rng.randrange(10):02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{self.serial:06d}.bin").write_bytes(self._content())
        self.serial += 1

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.bin") if p.is_file() and not p.is_symlink())

    def change(self, fraction: float = 0.01) -> dict[str, int]:
        """Edit, add, delete and rename a quarter of ``fraction`` of the files each."""
        files = [p for p in self.files() if os.lstat(p).st_nlink == 1]
        quarter = max(1, round(len(files) * fraction / 4))
        chosen = self.rng.sample(files, 3 * quarter)
        edited, deleted, renamed = chosen[:quarter], chosen[quarter : 2 * quarter], chosen[2 * quarter :]
        for path in edited:
            data = bytearray(path.read_bytes())
            at = self.rng.randrange(0, max(1, len(data) - 4096))
            data[at : at + 4096] = os.urandom(min(4096, len(data) - at))
            path.write_bytes(bytes(data))
        for path in deleted:
            path.unlink()
        for path in renamed:
            path.rename(path.with_name("renamed-" + path.name))
        for _ in range(quarter):
            self._new_file()
        return {"edited": quarter, "deleted": quarter, "renamed": quarter, "added": quarter}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: type, mode, mtime (s), link target or content SHA-256, inode group."""
    entries: dict[str, tuple] = {}
    inodes: dict[int, str] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("l", stat.S_IMODE(st.st_mode), None, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("d", stat.S_IMODE(st.st_mode), int(st.st_mtime), None)
            else:
                with open(path, "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
                group = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else None
                entries[rel] = ("-", stat.S_IMODE(st.st_mode), int(st.st_mtime), digest, group)
    return entries


def warm(root: Path) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                with open(path, "rb") as fh:
                    while fh.read(1 << 20):
                        pass


# --- the agent, one process per job -------------------------------------------------------------


class Agent:
    def __init__(self, tree: Path, storage: Path) -> None:
        self.tree, self.storage = tree, storage
        self.next_id = 1000

    def _run(self, raw: dict) -> dict:
        out = subprocess.run(
            [sys.executable, "-c", RUN_ONE, str(REPO), json.dumps(raw)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    def _job(self, kind: str) -> dict:
        self.next_id += 1
        return {
            "id": self.next_id,
            "kind": kind,
            "client": {
                "id": 1,
                "name": "bench",
                "application": "bench",
                "plugin": "files",
                "options": {"paths": [str(self.tree)]},
            },
            "storage": {"kind": "filesystem", "root": str(self.storage), "compression": "none"},
        }

    def backup(self, base: dict | None = None) -> dict:
        raw = self._job("backup")
        raw["destination"] = f"bench/bench/job-{raw['id']}"
        raw["level"] = "incremental" if base else "full"
        raw["base"] = base
        result = self._run(raw)
        result["ref"] = ref_of(raw["id"], result["report"])
        return result

    def restore(self, point: dict, chain: list[dict], target: Path) -> dict:
        raw = self._job("restore")
        raw["backup"] = point
        raw["chain"] = chain
        raw["target"] = {"location": str(target), "overwrite": False, "paths": []}
        return self._run(raw)

    def remove(self, ref: dict) -> None:
        shutil.rmtree(self.storage / ref["location"])


def ref_of(job_id: int, report: dict) -> dict:
    """A recovery point as the portal hands it to the agent (docs/agent-protocol.md)."""
    index = report.get("index") or {}
    return {
        "id": job_id,
        "location": report["location"],
        "sha256": report["sha256"],
        "size": report["size"],
        "stored_size": report["stored_size"],
        "compression": report["compression"],
        "manifest": report["manifest"],
        "level": report.get("level", "full"),
        "index": {"sha256": index["sha256"], "size": index["size"]} if index else None,
    }


# --- the three measurements ------------------------------------------------------------------------


def step_and_week(args: argparse.Namespace, work: Path) -> None:
    tree = Tree(work / "tree", args.files, args.mib << 20)
    agent = Agent(tree.root, Path(tempfile.mkdtemp(prefix="bp-incr-", dir=args.storage_dir)))
    warm(tree.root)
    full = agent.backup()
    changes = tree.change()
    warm(tree.root)
    incremental = agent.backup(full["ref"])
    print(f"\nTree: {args.files:,} files, {full['report']['size'] / 2**20:,.0f} MiB of tar stream; "
          f"change: {changes}\n")
    print("| backup | level | seconds | bytes read | bytes written | stored | files stored | of the full's |")
    print("|---|---|---|---|---|---|---|---|")
    for label, run in (("day 0", full), ("day 1", incremental)):
        facts = run["report"]["manifest"]["facts"]
        stored_files = facts.get("stored_members", facts["members"])
        share = (
            f"read {run['read'] / full['read']:.2%}, written {run['written'] / full['written']:.2%}, "
            f"time {run['seconds'] / full['seconds']:.1%}"
        )
        print(f"| {label} | {run['report'].get('level', 'full')} | {run['seconds']:.2f} | {run['read']:,} | "
              f"{run['written']:,} | {run['report']['stored_size']:,} | {stored_files:,} | {share} |")
    if args.skip_week:
        return
    chain = [full["ref"], incremental["ref"]]
    snap = None
    for day in range(2, 8):
        tree.change()
        run = agent.backup(chain[-1])
        chain.append(run["ref"])
        snap = snapshot(tree.root)  # the tree as this backup saw it
        print(f"day {day}: {run['report'].get('level')} in {run['seconds']:.2f} s, "
              f"stored {run['report']['stored_size']:,} B", file=sys.stderr)
    tree.change()  # the live tree moves on; the restore must give the 7th incremental's tree
    target = work / "restored"
    restore = agent.restore(chain[-1], chain[:-1], target)
    restored = snapshot(target / tree.root.relative_to("/"))
    equal = restored == snap
    missing = sorted(set(snap) - set(restored))[:5]
    extra = sorted(set(restored) - set(snap))[:5]
    differ = sorted(k for k in set(snap) & set(restored) if snap[k] != restored[k])[:5]
    print(f"\nRestore of the 7th incremental (chain of {len(chain)}: a full and 7 incrementals): "
          f"{restore['seconds']:.2f} s, {len(restored):,} entries; equal to the snapshot: **{equal}**"
          + ("" if equal else f"; missing {missing}, extra {extra}, different {differ}"))
    shutil.rmtree(agent.storage, ignore_errors=True)


def month(args: argparse.Namespace, work: Path) -> None:
    tree = Tree(work / "tree-month", args.files, args.mib << 20)
    storage = Path(tempfile.mkdtemp(prefix="bp-month-", dir=args.storage_dir))
    agent = Agent(tree.root, storage)
    fulls_only: list[int] = []
    chained: list[int] = []
    base = None
    rows = []
    for day in range(args.days):
        if day:
            tree.change()
        warm(tree.root)
        full = agent.backup()
        fulls_only.append(full["report"]["stored_size"] + full["report"]["index"]["size"])
        if day % 7 == 0:
            run = full  # the weekly full serves both schemes
        else:
            agent.remove(full["ref"])  # counted; only the chain's newest point is needed on disk
            run = agent.backup(base)
        chained.append(run["report"]["stored_size"] + run["report"]["index"]["size"])
        if base is not None:
            agent.remove(base)
        base = run["ref"]
        rows.append((day, run["report"].get("level", "full"), sum(fulls_only), sum(chained), run["seconds"]))
        print(f"day {day + 1}: fulls {sum(fulls_only) / 2**30:.2f} GiB, weekly+incr "
              f"{sum(chained) / 2**30:.2f} GiB", file=sys.stderr)
    shutil.rmtree(storage, ignore_errors=True)
    print(f"\nStorage used over {args.days} days of 1 % daily change (nothing expires in the window):\n")
    print("| day | level (weekly scheme) | fulls only | weekly full + incrementals | ratio |")
    print("|---|---|---|---|---|")
    for day, level, fulls, chain_total, _ in rows:
        if day % 5 == 0 or day == args.days - 1:
            print(f"| {day + 1} | {level} | {fulls / 2**30:.2f} GiB | {chain_total / 2**30:.2f} GiB | "
                  f"{chain_total / fulls:.0%} |")
    write_svg(rows, args)


def write_svg(rows: list[tuple], args: argparse.Namespace) -> None:
    width, height, left, top, plot_w, plot_h = 760, 400, 80, 60, 640, 280
    top_value = max(r[2] for r in rows) / 2**30
    step = 5 if top_value > 20 else 2 if top_value > 8 else 1
    ceiling = (int(top_value // step) + 1) * step

    def x(day: int) -> float:
        return left + plot_w * day / max(1, len(rows) - 1)

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / ceiling

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="26" font-size="16" font-weight="bold">Storage used over {len(rows)} days '
        f"of 1 % daily change</text>",
        f'<text x="{left}" y="44" font-size="11" fill="#444">{args.mib:,} MiB in {args.files:,} files '
        "(bench/incremental.py); every point kept (retention longer than the window)</text>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#999"/>',
    ]
    for value in range(0, ceiling + 1, step):
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                   'stroke="#e2e2e2"/>')
        out.append(f'<text x="{left - 8}" y="{y(value) + 4:.1f}" font-size="11" text-anchor="end">'
                   f"{value} GiB</text>")
    for day in range(0, len(rows), 5):
        out.append(f'<text x="{x(day):.1f}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle">'
                   f"day {day + 1}</text>")
    for column, colour, label in ((2, "#c0392b", "a full every day"),
                                  (3, "#2471a3", "a weekly full, incrementals between")):
        points = " ".join(f"{x(r[0]):.1f},{y(r[column] / 2**30):.1f}" for r in rows)
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
        last = rows[-1]
        out.append(f'<text x="{x(last[0]) - 4:.1f}" y="{y(last[column] / 2**30) - 8:.1f}" font-size="12" '
                   f'text-anchor="end" fill="{colour}">{label}: {last[column] / 2**30:.1f} GiB</text>')
    out.append("</svg>")
    SVG.write_text("\n".join(out) + "\n")
    print(f"\nwrote {SVG.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--storage-dir", default="/dev/shm")  # noqa: S108 - a benchmark's scratch
    parser.add_argument("--skip-week", action="store_true", help="the step only")
    parser.add_argument("--skip-month", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bp-incr-tree-", dir=args.storage_dir))
    try:
        step_and_week(args, work)
        if not args.skip_month:
            month(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
