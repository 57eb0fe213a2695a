"""The work-vs-data curve: the portal's work per 1,000 jobs against the data it protects.

    .venv/bin/python bench/curve.py        # var/fleet-results/*.json -> docs/images/work-vs-data.svg
    .venv/bin/python bench/curve.py --out /tmp/x.svg

Reads the fleet simulator's results (bench/fleet.py) and draws, with the standard
library only, one panel per measure on a shared logarithmic x axis (data
protected = agents × clients per agent × reported size per client):

- the portal's CPU seconds per 1,000 jobs (gunicorn and worker processes);
- the database's commits per 1,000 jobs (PostgreSQL; n/a on SQLite);
- human actions per 1,000 jobs: requests_app.metrics' human actions (manual
  jobs + decisions by a person + alerts acknowledged) plus the alerts raised
  that a person must look at, over the whole run (its drain included, when
  the retries of the always-failing clients run out), per 1,000 jobs run.

One series per engine; each point is one run, labelled with its fleet size.
Also prints the numbers as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
from html import escape
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "var" / "fleet-results"
OUT = REPO / "docs" / "images" / "work-vs-data.svg"

SERIES = {
    "sqlite-1": ("SQLite + django-q2, 1 portal", "#d9822b", "circle"),
    "pg-1": ("PostgreSQL + Celery/Redis, 1 portal", "#2b6cb0", "square"),
    "pg-2": ("PostgreSQL + Celery/Redis, 2 portals", "#2f855a", "diamond"),
}

WIDTH, PANEL_H, LEFT, RIGHT, TOP = 900, 230, 90, 250, 70
GAP = 70


HUMAN = ("manual_jobs", "approved_by_person", "rejected_by_person", "alerts_acknowledged")


def jobs_run(r: dict) -> int:
    """Jobs of the run that reached a terminal state (requests_app.metrics' "jobs run")."""
    states = r["correctness"]["by_state"]
    return sum(states.get(state, 0) for state in ("succeeded", "failed", "cancelled"))


def human_actions(r: dict) -> int:
    return sum(r["people"]["run"].get(name, 0) for name in HUMAN)


def human_per_1000(r: dict) -> float | None:
    """(Human actions + alerts raised) over the whole run, per 1,000 jobs run (drain included)."""
    jobs = jobs_run(r)
    if not jobs:
        return None
    return (human_actions(r) + r["alerts"]["run_total"]) * 1000 / jobs


def measures(r: dict) -> dict:
    commits = r["db"]["commits_per_job"]
    return {
        "cpu": r["cpu"]["portal_s_per_1000_jobs"],
        "commits": commits * 1000 if commits is not None else None,
        "human": human_per_1000(r),
    }


PANELS = (
    ("cpu", "Portal CPU seconds per 1,000 jobs"),
    ("commits", "Database commits per 1,000 jobs (PostgreSQL)"),
    ("human", "Human actions + alerts raised per 1,000 jobs run"),
)


def size_label(value: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9)):
        if value >= scale:
            number = value / scale
            return f"{number:g} {unit}" if number < 1000 else f"{number:,.0f} {unit}"
    return f"{value:g} B"


def nice_max(value: float) -> tuple[float, float]:
    if value <= 0:
        return 1.0, 0.25
    exp = 10 ** math.floor(math.log10(value))
    for step in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10):
        if value / (step * exp) <= 5:
            return math.ceil(value / (step * exp)) * step * exp, step * exp
    return value, value / 5


def marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "square":
        return f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{colour}"/>'
    if shape == "diamond":
        path = f"M{x:.1f} {y - 7:.1f} L{x + 7:.1f} {y:.1f} L{x:.1f} {y + 7:.1f} L{x - 7:.1f} {y:.1f} Z"
        return f'<path d="{path}" fill="{colour}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5.5" fill="{colour}"/>'


def draw(runs: list[dict]) -> str:
    xs = [r["data_protected_bytes"] for r in runs] + [1e11, 1e16]  # 100 GB … 10 PB at least
    lo = 10 ** math.floor(math.log10(min(xs)))
    hi = 10 ** math.ceil(math.log10(max(xs)))
    if hi <= lo:
        hi = lo * 10
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + len(PANELS) * (PANEL_H + GAP) + 20

    pad = 0.25  # decades of room on both sides, so that no point sits on the frame

    def sx(v: float) -> float:
        span = math.log10(hi) - math.log10(lo) + 2 * pad
        return LEFT + (math.log10(v) - math.log10(lo) + pad) / span * plot_w

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="28" font-size="18" font-weight="bold">'
        "Portal work per 1,000 jobs against the data protected</text>",
        f'<text x="{LEFT}" y="50" font-size="12" fill="#444">'
        "Fleet simulator (bench/fleet.py), one point per run; x: agents × clients × reported size per client "
        "(log scale)</text>",
    ]
    for index, (key, title) in enumerate(PANELS):
        top = TOP + index * (PANEL_H + GAP) + 20
        bottom = top + PANEL_H
        values = [measures(r)[key] for r in runs if measures(r)[key] is not None]
        taken: list[tuple[float, float, float]] = []  # labels placed: x from, x to, y

        def place(x0: float, x1: float, y: float, taken: list = taken) -> float:
            """A free line for a label: moved down 12 px while it overlaps one already placed."""
            while any(a < x1 and x0 < b and abs(y - ty) < 11 for a, b, ty in taken):
                y += 12
            taken.append((x0, x1, y))
            return y

        ordered = sorted(values)
        # One outlier (a saturated run) 10× above the rest would flatten them: cap the axis, mark it.
        basis = (
            ordered[-2]
            if len(ordered) > 1 and ordered[-1] > 10 * max(ordered[-2], 1e-9)
            else max(values or [1])
        )
        ymax, ystep = nice_max(basis * 1.2 if basis else 1)
        out.append(
            f'<text x="{LEFT}" y="{top - 10}" font-size="14" font-weight="bold">{escape(title)}</text>'
        )
        out.append(
            f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="#fafafa" stroke="#999"/>'
        )
        tick = ystep * 0
        while tick <= ymax + 1e-9:
            y = bottom - tick / ymax * PANEL_H
            out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e2e2"/>')
            text = f"{tick:,.0f}" if ystep >= 1 else f"{tick:.2f}"
            out.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{text}</text>')
            tick += ystep
        decade = lo
        while decade <= hi * 1.0001:
            x = sx(decade)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" stroke="#e2e2e2"/>')
            out.append(
                f'<text x="{x:.1f}" y="{bottom + 16}" font-size="11" text-anchor="middle">'
                f"{size_label(decade)}</text>"
            )
            decade *= 10
        if not values:
            out.append(
                f'<text x="{LEFT + plot_w / 2}" y="{top + PANEL_H / 2}" font-size="13" text-anchor="middle" '
                'fill="#666">n/a (no run measured it)</text>'
            )
        for series, (_, colour, shape) in SERIES.items():
            points = sorted(
                (r["data_protected_bytes"], measures(r)[key], r) for r in runs if series_of(r) == series
            )
            for x_value, y_value, r in points:
                if key == "commits" and r["config"]["engine"] == "sqlite":
                    continue  # no commit counter on SQLite, saturated or not
                if y_value is None and not r["throughput"]["jobs_completed"]:
                    # Saturated: no job completed in the window, so no "per 1,000 jobs" exists.
                    x, y = sx(x_value), top + 14
                    out.append(
                        f'<text x="{x:.1f}" y="{y + 5:.1f}" font-size="16" text-anchor="middle" '
                        f'fill="{colour}">×</text>'
                    )
                    engine = "SQLite" if r["config"]["engine"] == "sqlite" else "PostgreSQL"
                    size = f"{r['config']['agents']:,} × {r['config']['size_gb']:g} GB"
                    text = f"{engine}, {size}: 0 jobs completed in the window"
                    ty = place(x - 8 - len(text) * 5.6, x - 8, y + 22)
                    out.append(
                        f'<text x="{x - 8:.1f}" y="{ty:.1f}" font-size="10" text-anchor="end" '
                        f'fill="{colour}">{escape(text)}</text>'
                    )
            points = [p for p in points if p[1] is not None]
            for x_value, y_value, r in points:
                off_scale = y_value > ymax
                x, y = sx(x_value), bottom - min(y_value, ymax) / ymax * PANEL_H
                out.append(marker(shape, x, y, colour))
                agents = r["config"]["agents"]
                note = " (off scale ↑, saturated)" if off_scale else ""
                number = f"{y_value:,.0f}" if y_value >= 100 else f"{y_value:,.1f}"
                text = f"{agents:,} × {r['config']['size_gb']:g} GB: {number}{note}"
                width = len(text) * 5.6
                anchor, dx = ("end", -8) if x > LEFT + plot_w * 0.7 else ("start", 8)
                x0 = x + dx - (width if anchor == "end" else 0)
                ty = place(x0, x0 + width, y + (14 if off_scale else -7))
                out.append(
                    f'<text x="{x + dx:.1f}" y="{ty:.1f}" font-size="10" '
                    f'text-anchor="{anchor}" fill="{colour}">{escape(text)}</text>'
                )
    legend_x, legend_y = WIDTH - RIGHT + 20, TOP + 30
    out.append(f'<text x="{legend_x}" y="{legend_y - 12}" font-size="12" font-weight="bold">Runs</text>')
    for n, (_, (name, colour, shape)) in enumerate(SERIES.items()):
        y = legend_y + 8 + n * 24
        out.append(marker(shape, legend_x + 6, y, colour))
        out.append(f'<text x="{legend_x + 18}" y="{y + 4}" font-size="11">{escape(name)}</text>')
    notes = [
        "Label: agents × GB per client",
        "(1 client per agent): value.",
        "Human actions: manual jobs +",
        "decisions by a person + alerts",
        "acknowledged (none in a",
        "simulation), plus every alert",
        "raised in the run, per 1,000",
        "jobs run (terminal).",
        "× : no job completed in the",
        "window (saturated portal).",
        "2-core machine shared by the",
        "simulator, portal and database.",
    ]
    for n, line in enumerate(notes):
        out.append(
            f'<text x="{legend_x}" y="{legend_y + 100 + n * 16}" font-size="11" fill="#444">'
            f"{escape(line)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def series_of(r: dict) -> str:
    engine = "sqlite" if r["config"]["engine"] == "sqlite" else "pg"
    return f"{engine}-{r['config']['portals']}"


def load(pattern: str) -> list[dict]:
    runs = []
    for path in sorted(RESULTS.glob(pattern)):
        r = json.loads(path.read_text())
        if r.get("status") == "finished" and "throughput" in r and not r["label"].startswith("smoke"):
            runs.append(r)
    return runs


def table(runs: list[dict]) -> str:
    lines = [
        "| run | data protected | jobs completed (window) | CPU s / 1,000 jobs | commits / 1,000 jobs | "
        "jobs run (whole run) | human actions | alerts raised | (human actions + alerts) / 1,000 jobs run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (series_of(r), r["data_protected_bytes"])):
        m = measures(r)

        def f(v):
            return "n/a" if v is None else f"{v:,.1f}"

        lines.append(
            f"| {r['label']} | {size_label(r['data_protected_bytes'])} | "
            f"{r['throughput']['jobs_completed']} | {f(m['cpu'])} | {f(m['commits'])} | {jobs_run(r)} | "
            f"{human_actions(r)} | {r['alerts']['run_total']} | {f(m['human'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--glob", default="*.json")
    args = parser.parse_args()
    runs = load(args.glob)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(draw(runs))
    print(table(runs))
    print(f"\nwrote {out} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
