"""Reports benchmark: how long each monthly report takes to aggregate and to render, on a large catalog.

    .venv/bin/python bench/generate_catalog.py --recreate     # once: 10,000 clients, 1,000,000 backups
    .venv/bin/python bench/reports.py --month 2026-10        # DATABASE: --database-url, default bp_bench

For each kind (chargeback, compliance, operations), company-wide:

- **aggregate**: ``reports.builders.build()``, timed ``--repeats`` times (the first run and the best are
  kept) with its SQL queries counted; the slowest queries are kept with their time;
- **PDF**: ``reports.render.pdf(report, detail="summary")`` in a fresh process, which reports the render
  time, the page count (pypdf) and its own peak RSS (``VmHWM``, so the build is included: that is what the
  monthly task's process holds);
- **CSV**: ``reports.render.csv(report)``, timed.

The same is done for the chargeback of the largest cost centre with every client row (``detail="clients"``),
the PDF each cost centre's owner receives. Results are printed as a Markdown table and written to
bench/results/reports.json; ``--explain`` also writes EXPLAIN ANALYZE of each report's slowest queries.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
KINDS = ("chargeback", "compliance", "operations")
TARGET_AGGREGATE_S, TARGET_PDF_S, TARGET_PDF_MB = 10.0, 30.0, 500.0
SLOWEST = 3  # queries kept per report


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DEBUG", "true")  # a development SECRET_KEY; queries are captured explicitly
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    # Run as a script, bench/ comes first on the path, where "reports" is this file, not the app.
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != here]
    import django

    django.setup()


def peak_rss_mb() -> float:
    """This process's high-water mark of resident memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def count_pages(data: bytes) -> int:
    try:
        from pypdf import PdfReader
    except ImportError:  # a rough count, good enough for WeasyPrint's output
        return data.count(b"/Type /Page") - data.count(b"/Type /Pages")
    return len(PdfReader(io.BytesIO(data)).pages)


# --- In this process: aggregation and CSV -------------------------------------------------


def measure_build(kind: str, month, repeats: int, **scope) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from reports import builders, render

    runs, report, captured = [], None, None
    for _ in range(repeats):
        with CaptureQueriesContext(connection) as queries:
            t0 = time.perf_counter()
            report = builders.build(kind, month, **scope)
            runs.append(time.perf_counter() - t0)
        captured = captured or list(queries.captured_queries)
    t0 = time.perf_counter()
    text = render.csv(report)
    csv_s = time.perf_counter() - t0
    slowest = sorted(captured, key=lambda q: -float(q["time"]))[:SLOWEST]
    return {
        "aggregate_first_s": runs[0],
        "aggregate_best_s": min(runs),
        "aggregate_runs_s": runs,
        "queries": len(captured),
        "query_seconds": sum(float(q["time"]) for q in captured),
        "slowest_queries": [{"seconds": float(q["time"]), "sql": q["sql"]} for q in slowest],
        "csv_s": csv_s,
        "csv_rows": text.count("\r\n") - 1,
        "csv_bytes": len(text.encode()),
    }


def explain(queries: list[dict]) -> str:
    from django.db import connection

    out = []
    with connection.cursor() as cursor:
        for query in queries:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
            plan = "\n".join(row[0] for row in cursor.fetchall())
            out.append(f"-- {query['seconds']:.3f} s when captured\n{query['sql']}\n\n{plan}\n")
    return "\n\n".join(out)


# --- In a fresh process: one PDF ------------------------------------------------------------


def render_one(args: argparse.Namespace) -> None:
    """Build and render one report; print what it cost as JSON (run by ``measure_pdf``)."""
    setup_django(args.database_url)
    from reports import builders, render
    from reports.periods import Month

    scope = {"cost_center": args.cost_center} if args.cost_center else {}
    t0 = time.perf_counter()
    report = builders.build(args.render, Month.parse(args.month), **scope)
    build_s = time.perf_counter() - t0
    rss_built = peak_rss_mb()
    t0 = time.perf_counter()
    data = render.pdf(report, paper="A4", detail=args.detail)
    pdf_s = time.perf_counter() - t0
    name = f"reports-{args.render}-{args.cost_center or 'company'}-{args.detail}.pdf"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_bytes(data)
    result = {
        "build_s": build_s,
        "pdf_s": pdf_s,
        "pdf_pages": count_pages(data),
        "pdf_bytes": len(data),
        "pdf_file": f"bench/results/{name}",
        "peak_rss_after_build_mb": rss_built,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(result))


def measure_pdf(args: argparse.Namespace, kind: str, detail: str, cost_center: str | None = None) -> dict:
    command = [sys.executable, __file__, "--database-url", args.database_url, "--month", args.month]
    command += ["--render", kind, "--detail", detail] + (
        ["--cost-center", cost_center] if cost_center else []
    )
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        return {
            "pdf_error": done.stderr.strip().splitlines()[-1] if done.stderr else f"exit {done.returncode}"
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- The run ------------------------------------------------------------------------------------


def code_fingerprint() -> str:
    """A hash of the reports app and its templates: which code the figures were measured with."""
    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("reports/**/*.py"), *REPO.glob("templates/reports/**/*")]):
        if path.is_file():
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def environment() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(" on ")[0]
        settings = {}
        for name in ("shared_buffers", "work_mem", "jit", "max_parallel_workers_per_gather"):
            cursor.execute(f"SHOW {name}")
            settings[name] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM catalog_backup")
        backups = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM catalog_job")
        jobs = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM catalog_backupclient")
        clients = cursor.fetchone()[0]
    return {
        "postgresql": version,
        "postgresql_settings": settings,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "reports_code": code_fingerprint(),
        "clients": clients,
        "backups": backups,
        "jobs": jobs,
    }


def largest_cost_center(month) -> str:
    from django.db.models import Count

    from catalog.models import CostCenter

    centers = CostCenter.objects.annotate(n=Count("applications__clients")).order_by("-n", "code")
    return centers.values_list("code", flat=True)[0]


def run(args: argparse.Namespace) -> dict:
    setup_django(args.database_url)
    from reports.periods import Month

    month = Month.parse(args.month)
    results = {"month": args.month, "environment": environment(), "reports": []}
    center = largest_cost_center(month)
    cases = [(kind, "summary", None) for kind in KINDS] + [("chargeback", "clients", center)]
    for kind, detail, cost_center in cases:
        print(f"  {kind} {cost_center or 'company-wide'} …", end="", flush=True)
        scope = {"cost_center": cost_center} if cost_center else {}
        row = {"kind": kind, "scope": cost_center or "company", "detail": detail}
        row |= measure_build(kind, month, args.repeats, **scope)
        row |= measure_pdf(args, kind, detail, cost_center)
        results["reports"].append(row)
        print(f" {row['aggregate_first_s']:.2f} s, {row['queries']} queries, PDF {row.get('pdf_s', 0):.1f} s")
        if args.explain:
            RESULTS.mkdir(parents=True, exist_ok=True)
            path = RESULTS / f"reports-explain-{kind}-{cost_center or 'company'}.txt"
            path.write_text(explain(row["slowest_queries"]))
    return results


def table(results: dict) -> str:
    header = ("report", "scope", "aggregate (first / best)", "queries", "PDF render", "pages", "peak RSS",
              "CSV", "CSV rows")  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results["reports"]:
        scope = "company-wide" if r["scope"] == "company" else f"cost centre {r['scope']}"
        if "pdf_error" in r:
            pdf = (f"error: {r['pdf_error']}", "—", "—")
        else:
            pdf = (f"{r['pdf_s']:.1f} s", str(r["pdf_pages"]), f"{r['peak_rss_mb']:.0f} MB")
        lines.append(
            f"| {r['kind']} ({r['detail']}) | {scope} "
            f"| {r['aggregate_first_s']:.2f} s / {r['aggregate_best_s']:.2f} s | {r['queries']} "
            f"| {pdf[0]} | {pdf[1]} | {pdf[2]} | {r['csv_s']:.2f} s | {r['csv_rows']:,} |"
        )
    return "\n".join(lines)


def misses(results: dict) -> list[str]:
    found = []
    for r in results["reports"]:
        name = f"{r['kind']} ({r['scope']}, {r['detail']})"
        if r["aggregate_first_s"] >= TARGET_AGGREGATE_S:
            found.append(f"{name}: aggregation {r['aggregate_first_s']:.1f} s ≥ {TARGET_AGGREGATE_S:.0f} s")
        if r["scope"] == "company" and "pdf_s" in r:
            if r["pdf_s"] >= TARGET_PDF_S:
                found.append(f"{name}: PDF {r['pdf_s']:.1f} s ≥ {TARGET_PDF_S:.0f} s")
            if r["peak_rss_mb"] >= TARGET_PDF_MB:
                found.append(f"{name}: peak RSS {r['peak_rss_mb']:.0f} MB ≥ {TARGET_PDF_MB:.0f} MB")
        if "pdf_error" in r:
            found.append(f"{name}: PDF failed: {r['pdf_error']}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bp_bench")
    parser.add_argument("--month", default="2026-10")
    parser.add_argument("--repeats", type=int, default=3, help="Builds per report (first and best are kept).")
    parser.add_argument(
        "--explain", action="store_true", help="EXPLAIN ANALYZE each report's slowest queries."
    )
    parser.add_argument(
        "--render", choices=KINDS, help=argparse.SUPPRESS
    )  # internal: one PDF, in a subprocess
    parser.add_argument("--detail", default="summary", help=argparse.SUPPRESS)
    parser.add_argument("--cost-center", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        render_one(args)
        return
    results = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reports.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    env = results["environment"]
    print(
        f"\n{env['clients']:,} clients, {env['backups']:,} backups, {env['jobs']:,} jobs; "
        f"{env['postgresql']}, {env['postgresql_settings']}; "
        f"load average at start {env['load_average_at_start']}; reports code {env['reports_code']}\n"
    )
    print(table(results))
    problems = misses(results)
    print("\nTargets: aggregate < 10 s each; company-wide PDF < 30 s and < 500 MB.")
    print("\n".join(f"MISSED {p}" for p in problems) if problems else "All targets met.")


if __name__ == "__main__":
    main()
