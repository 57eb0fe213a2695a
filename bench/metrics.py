"""/metrics benchmark: how long a Prometheus scrape takes on a 10,000-client catalog (target: < 1 s).

    .venv/bin/python bench/metrics.py --generate        # once: bench/generate_catalog.py, 10,000 clients
    .venv/bin/python bench/metrics.py                   # DATABASE: --database-url, default bp_metrics_bench

The catalog is bench/generate_catalog.py's (PostgreSQL: 10,000 clients on 2,000 agents, 1,000,000
backups in a month, failed jobs, restore tests, requests, alerts; docs/performance.md, "Reports").
Each scrape is a real ``GET /metrics`` with the bearer token through the whole middleware stack
(Django's test client, in this process), timed ``--repeats`` times: the first (cold caches, and the
capacity forecast, which a scrape computes once an hour and then reuses) is kept apart, with the
forecast alone; the median and the worst of the rest are the figures. Also reported: the queries of
one scrape and the slowest of them, the body's size and its number of series, and the collector's
own time (``backup_portal_metrics_collect_seconds``: the SQL and building the families; the rest
is rendering the text). Results are printed and written to bench/results/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TARGET_S = 1.0
TOKEN = "bench-metrics-token"  # noqa: S105 (a throwaway token for an in-process request)


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DEBUG", "true")  # a development SECRET_KEY; queries are captured explicitly
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["PORTAL_METRICS_TOKEN"] = TOKEN
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != here]
    import django

    django.setup()


def scrape(client) -> tuple[float, bytes]:
    started = time.perf_counter()
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_HOST="127.0.0.1")
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"/metrics answered {response.status_code}: {response.content[:300]!r}")
    return elapsed, response.content


def collect_seconds(body: bytes) -> float:
    for line in body.decode().splitlines():
        if line.startswith("backup_portal_metrics_collect_seconds "):
            return float(line.split()[1])
    raise SystemExit("no backup_portal_metrics_collect_seconds in the body")


def run(repeats: int) -> dict:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from catalog.models import Backup, BackupClient, Job
    from catalog.services import capacity

    client = Client()
    cold, body = scrape(client)  # with the capacity forecast, computed once an hour (then cached)
    started = time.perf_counter()
    capacity.forecast_all()
    forecast = time.perf_counter() - started
    with CaptureQueriesContext(connection) as captured:
        scrape(client)
    queries = sorted(
        ({"seconds": float(q["time"]), "sql": q["sql"][:300]} for q in captured.captured_queries),
        key=lambda q: -q["seconds"],
    )
    times, collects = [], []
    for _ in range(repeats):
        elapsed, body = scrape(client)
        times.append(elapsed)
        collects.append(collect_seconds(body))
    lines = body.decode().splitlines()
    series = [line for line in lines if line and not line.startswith("#")]
    client_series = [line for line in series if line.startswith("backup_portal_client_")]
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(" on ")[0]
    return {
        "postgresql": version,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "clients": BackupClient.objects.count(),
        "backups": Backup.objects.count(),
        "jobs": Job.objects.count(),
        "cold_seconds": cold,
        "forecast_seconds": forecast,
        "median_seconds": statistics.median(times),
        "worst_seconds": max(times),
        "repeats": repeats,
        "median_collect_seconds": statistics.median(collects),
        "queries": len(queries),
        "slowest_queries": queries[:3],
        "body_bytes": len(body),
        "series": len(series),
        "client_series": len(client_series),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bp_metrics_bench")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--generate", action="store_true", help="(Re)create the catalog first.")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--backups", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.generate:
        sys.path.insert(0, str(REPO / "bench"))
        import generate_catalog

        generate_catalog.main(
            ["--database-url", args.database_url, "--clients", str(args.clients),
             "--backups", str(args.backups), "--recreate"]
        )  # fmt: skip
    setup_django(args.database_url)
    results = run(args.repeats)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n{results['clients']:,} clients, {results['backups']:,} backups, {results['jobs']:,} jobs; "
        f"{results['postgresql']}; {results['cpus']} CPUs, load average at start "
        f"{', '.join(f'{x:.2f}' for x in results['load_average_at_start'])}\n"
    )
    print("| scrape | seconds |\n|---|---|")
    print(f"| first (cold caches, computes the hourly capacity forecast) | {results['cold_seconds']:.3f} |")
    print(f"| the capacity forecast alone (capacity.forecast_all) | {results['forecast_seconds']:.3f} |")
    print(f"| median of {results['repeats']} | {results['median_seconds']:.3f} |")
    print(f"| worst of {results['repeats']} | {results['worst_seconds']:.3f} |")
    print(f"| of which collecting (SQL + families), median | {results['median_collect_seconds']:.3f} |")
    print(
        f"\n{results['queries']} queries per scrape; {results['series']:,} series "
        f"({results['client_series']:,} per-client), {results['body_bytes'] / 1024:.0f} KiB."
    )
    for query in results["slowest_queries"]:
        print(f"  {query['seconds']:.3f} s  {query['sql'][:140]}")
    verdict = "met" if results["median_seconds"] < TARGET_S else "MISSED"
    print(f"\nTarget: a scrape < {TARGET_S:.0f} s at 10,000 clients: {verdict}.")


if __name__ == "__main__":
    main()
