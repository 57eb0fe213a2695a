"""Scheduler benchmark: one tick of ``schedule_due_backups``, 10,000 clients due, on PostgreSQL (issue #13).

    .venv/bin/python bench/schedule.py            # once: builds the scratch catalog (about a minute)
    .venv/bin/python bench/schedule.py --reuse    # then: reuses it
    .venv/bin/python bench/schedule.py --reuse --code /tmp/sched-before --label before  # another tree

The catalog (bench/schedule_catalog.py) has 10,000 clients on 2,000 agents, 9,78x of them active, 2 %
of those with a backup still open (the scheduler's "busy" clients), and ten finished jobs per client.
Scenarios, each run ``--repeats`` times from the same starting state:

- **all due**: every active client due; one tick (``schedule_due_backups(now=NOW)``), timed;
- **1,000 due**: 1,000 of them due, the rest not: the cost follows the clients due, not the catalog;
- **two schedulers**: every active client due, two processes tick at the same moment.

After each run it checks what must hold: no client has two open backups, every due client that was
not busy got exactly one job (and the two schedulers' counts add up to that), and no active client
is left due (busy ones are rescheduled too). It prints a Markdown table: wall time (median and best),
jobs queued, SQL queries and the time spent in them (execute to result, as the driver saw it), and the
scheduler process's own CPU time (the Python side, less sensitive than wall time to a busy machine).

``--code DIR`` imports the scheduler (and all the portal's code) from another tree, e.g. a worktree of
the commit before a change, against the same database. ``--profile`` prints a cProfile of one
all-due tick; ``--explain`` prints EXPLAIN ANALYZE of the tick's SELECTs (in a rolled-back
transaction). The tick runs at a fixed ``NOW``; the jobs it queues are deleted before the next run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 26, 2, 0, 30, tzinfo=UTC)
DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/bp_sched"
TARGET_S = 2.0


def setup_django(database_url: str, code: Path) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DEBUG", "true")  # a development SECRET_KEY; queries are counted explicitly
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    # The portal's code comes from ``code``; bench/ itself must not shadow anything.
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(code)] + [p for p in sys.path if Path(p or ".").resolve() not in (here, code)]
    import django

    django.setup()


def loader():
    """bench/schedule_catalog.py of this tree, whatever ``--code`` says."""
    spec = importlib.util.spec_from_file_location(
        "schedule_catalog", Path(__file__).with_name("schedule_catalog.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class QueryMeter:
    """Counts the queries run on the default connection and the time spent in them."""

    def __init__(self, keep: bool = False) -> None:
        self.count = 0
        self.seconds = 0.0
        self.keep = keep
        self.kept: list[tuple[str, object]] = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started
            self.count += 1
            if self.keep:
                self.kept.append((sql, params))


def prepare(due: int | None) -> dict[str, int]:
    """Start state: the bench's own jobs gone, ``due`` active clients due (None: all), the rest not."""
    from django.db import connection

    from catalog.choices import ClientStatus, JobTrigger
    from catalog.models import BackupClient

    active = list(
        BackupClient.objects.filter(status=ClientStatus.ACTIVE).order_by("pk").values_list("pk", flat=True)
    )
    chosen = active if due is None else active[:: max(1, len(active) // due)][:due]
    with connection.cursor() as cur:
        cur.execute(
            "DELETE FROM catalog_job WHERE trigger = %s AND created_at = %s", [JobTrigger.SCHEDULE, NOW]
        )
        cur.execute(
            "UPDATE catalog_backupclient SET next_backup_at = %s + interval '1 hour' WHERE status = 'active'",
            [NOW],
        )
        # Due over the last hour, as clients fall due minute by minute between ticks that did not run.
        cur.execute(
            "UPDATE catalog_backupclient SET next_backup_at = %s - (id %% 3600) * interval '1 second' "
            "WHERE id = ANY(%s)",
            [NOW, chosen],
        )
        cur.execute("VACUUM ANALYZE catalog_backupclient, catalog_job")
    busy = count_busy(chosen)
    return {"due": len(chosen), "busy": busy}


def count_busy(client_ids: list[int]) -> int:
    from catalog.choices import JobKind, JobState
    from catalog.models import Job

    return (
        Job.objects.filter(client_id__in=client_ids, kind=JobKind.BACKUP, state__in=JobState.open())
        .exclude(created_at=NOW)
        .values("client_id")
        .distinct()
        .count()
    )


def check(state: dict[str, int], reported: int) -> dict[str, int]:
    """What must hold after a tick; raises if it does not."""
    from django.db.models import Count

    from catalog.choices import ClientStatus, JobKind, JobState, JobTrigger
    from catalog.models import BackupClient, Job

    made = Job.objects.filter(trigger=JobTrigger.SCHEDULE, created_at=NOW)
    queued = made.count()
    doubled = (
        Job.objects.filter(kind=JobKind.BACKUP, state__in=JobState.open())
        .values("client_id")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    left_due = BackupClient.objects.filter(status=ClientStatus.ACTIVE, next_backup_at__lte=NOW).count()
    problems = []
    if doubled:
        problems.append(f"{doubled} clients with two open backups")
    if made.values("client_id").distinct().count() != queued:
        problems.append("a client got two jobs")
    if queued != state["due"] - state["busy"]:
        problems.append(f"{queued} queued, expected {state['due'] - state['busy']} (due − busy)")
    if reported != queued:
        problems.append(f"the scheduler(s) reported {reported}, the table holds {queued}")
    if left_due:
        problems.append(f"{left_due} active clients still due")
    if problems:
        raise SystemExit("check failed: " + "; ".join(problems))
    return {"queued": queued}


def tick(*, keep: bool = False) -> dict[str, object]:
    from django.db import connection

    from catalog.services.scheduler import schedule_due_backups

    connection.ensure_connection()
    meter = QueryMeter(keep=keep)
    with connection.execute_wrapper(meter):
        started, cpu = time.perf_counter(), time.process_time()
        queued = schedule_due_backups(now=NOW)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "queued": queued,
        "wall": wall,
        "cpu": cpu,
        "queries": meter.count,
        "db": meter.seconds,
        "kept": meter.kept,
    }


def two_at_once(args) -> dict[str, object]:
    """Two scheduler processes tick at the same moment; their wall time is first start to last finish."""
    start_at = time.time() + 3.0  # both have set Django up and connected by then
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--database-url",
        args.database_url,
        "--code",
        str(args.code),
        "--start-at",
        repr(start_at),
    ]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(worker.communicate()[0]) for worker in workers]
    if any(worker.returncode for worker in workers):
        raise SystemExit("a scheduler process failed")
    return {
        "queued": sum(r["queued"] for r in results),
        "wall": max(r["finished"] for r in results) - start_at,
        "queries": sum(r["queries"] for r in results),
        "db": sum(r["db"] for r in results),
        "cpu": sum(r["cpu"] for r in results),
        "split": " + ".join(str(r["queued"]) for r in results),
    }


def worker(args) -> None:
    from django.db import connection

    connection.ensure_connection()
    time.sleep(max(0.0, args.start_at - time.time()))
    result = tick()
    result.pop("kept")
    print(json.dumps({**result, "finished": time.time()}))


def explain(kept: list[tuple[str, object]]) -> None:
    from django.db import connection, transaction

    seen = set()
    for sql, params in kept:
        shape = sql.split(" WHERE ")[0]
        if not sql.lstrip().upper().startswith("SELECT") or shape in seen:
            continue
        seen.add(shape)
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
            plan = "\n    ".join(row[0][:150] + ("…" if len(row[0]) > 150 else "") for row in cur.fetchall())
            transaction.set_rollback(True)
        print(f"\n{sql[:160]}{'…' if len(sql) > 160 else ''}\n    {plan}")


def profile() -> None:
    import cProfile
    import pstats

    prepare(None)
    profiler = cProfile.Profile()
    profiler.enable()
    tick()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE, help="A scratch database: it is dropped.")
    parser.add_argument("--reuse", action="store_true", help="Reuse the catalog loaded by a previous run.")
    parser.add_argument("--code", type=Path, default=REPO, help="The tree whose scheduler is measured.")
    parser.add_argument("--label", default="", help="A name for this tree in the table (before, after).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=2_000)
    parser.add_argument("--applications", type=int, default=400)
    parser.add_argument("--history", type=int, default=10, help="Finished jobs per client.")
    parser.add_argument("--some", type=int, default=1_000, help="Clients due in the proportionality run.")
    parser.add_argument("--profile", action="store_true", help="Only profile one all-due tick.")
    parser.add_argument("--explain", action="store_true", help="Also EXPLAIN ANALYZE the tick's SELECTs.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.code = args.code.resolve()

    if not args.reuse and not args.worker:
        os.environ.setdefault("DEBUG", "true")
        loader().recreate_database(args.database_url)
    setup_django(args.database_url, args.code)
    if args.worker:
        return worker(args)
    if not args.reuse:
        loader().load(
            clients=args.clients, agents=args.agents, applications=args.applications, history=args.history
        )
    if args.profile:
        return profile()

    scenarios = [
        ("all due", None, lambda: tick()),
        (f"{args.some:,} due", args.some, lambda: tick()),
        ("two schedulers, all due", None, lambda: two_at_once(args)),
    ]
    rows = []
    load_before = os.getloadavg()[0]
    for name, due, run in scenarios:
        runs = []
        for _ in range(args.repeats):
            state = prepare(due)
            result = run()
            check(state, result["queued"])
            runs.append(result)
            print(
                f"  {name}: {result['wall']:.3f} s, {result['queued']} queued, {result['queries']} queries",
                file=sys.stderr,
            )
        walls = [r["wall"] for r in runs]
        last = runs[-1]
        rows.append(
            {
                "scenario": name,
                "due": state["due"],
                "busy": state["busy"],
                "queued": last["queued"] if "split" not in last else f"{last['queued']} ({last['split']})",
                "median": statistics.median(walls),
                "best": min(walls),
                "queries": last["queries"],
                "db": statistics.median(r["db"] for r in runs),
                "cpu": statistics.median(r["cpu"] for r in runs),
            }
        )
    if args.explain:
        prepare(None)
        kept = tick(keep=True)["kept"]
        prepare(None)  # the state the tick's first batch saw
        explain(kept)
    print(
        f"\nScheduler tick ({args.label or args.code}), {args.repeats} runs each, "
        f"PostgreSQL, {os.cpu_count()} cores, load average {load_before:.1f} → {os.getloadavg()[0]:.1f}:\n"
    )
    print(
        "| scenario | due | busy (skipped) | jobs queued | wall, median | wall, best "
        "| queries | in SQL, median | scheduler CPU, median |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['due']:,} | {r['busy']} | {r['queued']} | {r['median']:.2f} s | "
            f"{r['best']:.2f} s | {r['queries']} | {r['db']:.2f} s | {r['cpu']:.2f} s |"
        )
    slowest = max(r["median"] for r in rows if r["scenario"] == "all due")
    print(f"\nall due: {'within' if slowest < TARGET_S else 'OVER'} the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
