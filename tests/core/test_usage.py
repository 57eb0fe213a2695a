"""The usage meter (core.usage): the portal's own CPU time and its database's commits, cheaply.

Time is simulated: each test gives the meter its own wall clock and CPU clock, so
"a minute later" and "2 CPU seconds later" are exact.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import MiddlewareNotUsed
from django.db import DatabaseError, connection
from django.http import HttpResponse
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from core import queue, usage
from core.middleware import UsageMeterMiddleware
from core.models import CounterReading, PortalUsage

pytestmark = pytest.mark.django_db

INTERVAL = 60


class FakeClock:
    def __init__(self, start: float = 0.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocks(monkeypatch, settings):
    """The process's meter, on a fake wall clock (``wall``) and a fake CPU clock (``cpu``)."""
    settings.PORTAL_USAGE_METER = True
    wall, cpu = FakeClock(1000.0), FakeClock(0.0)
    monkeypatch.setattr(usage, "meter", usage.Meter(interval=INTERVAL, clock=wall, cpu=cpu))
    return wall, cpu


def cpu_recorded() -> float:
    return sum(row.cpu_seconds or 0 for row in PortalUsage.objects.all())


def writes(captured) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if q["sql"].split()[0] in ("UPDATE", "INSERT")]


def middleware(get_response=lambda request: HttpResponse("ok")):
    return UsageMeterMiddleware(get_response)


# --- Web processes: the middleware ------------------------------------------------------------------


def test_no_query_between_flushes_and_one_write_per_interval(clocks):
    wall, cpu = clocks
    handler, request = middleware(), RequestFactory().get("/")
    with CaptureQueriesContext(connection) as first_minute:
        for _ in range(INTERVAL):  # one request a second, 0.1 s of CPU each
            cpu.now += 0.1
            assert handler(request).status_code == 200
            wall.now += 1
    assert first_minute.captured_queries == []  # the first request starts the interval: no query yet

    with CaptureQueriesContext(connection) as ten_minutes:
        for _ in range(10 * INTERVAL):
            cpu.now += 0.1
            handler(request)
            wall.now += 1
    # Ten flushes: the first of the hour creates its row, each other one is one UPDATE.
    assert [sql.split()[0] for sql in writes(ten_minutes)] == ["UPDATE", "INSERT"] + ["UPDATE"] * 9
    others = {q["sql"].split()[0] for q in ten_minutes.captured_queries} - {"UPDATE", "INSERT"}
    assert others <= {"SAVEPOINT", "RELEASE"}  # the test's transaction; in production the UPDATE is alone
    # Everything the process used up to the last flush (its 601st request), the first minute's included.
    assert cpu_recorded() == pytest.approx(0.1 * (INTERVAL + 9 * INTERVAL + 1))


def test_a_flush_counts_all_the_processs_cpu_not_only_request_time(clocks):
    wall, cpu = clocks
    handler, request = middleware(), RequestFactory().get("/")
    cpu.now = 3.0  # the process started up (imports, settings) before its first request
    handler(request)
    cpu.now += 40.0  # a background thread, the garbage collector: no request at all
    wall.now += INTERVAL
    handler(request)
    assert cpu_recorded() == pytest.approx(43.0)


def test_a_failed_flush_does_not_break_the_request_and_its_cpu_is_kept(clocks, caplog):
    wall, cpu = clocks

    def down(seconds):
        raise DatabaseError("database is locked")

    usage.meter.record = down
    handler, request = middleware(), RequestFactory().get("/")
    handler(request)
    cpu.now, wall.now = 5.0, wall.now + INTERVAL
    with caplog.at_level(logging.WARNING, logger="core.usage"):
        response = handler(request)
    assert response.status_code == 200
    assert "could not record 5.000 CPU seconds" in caplog.text

    usage.meter.record = usage.add_cpu_seconds
    with CaptureQueriesContext(connection) as retried_too_soon:
        handler(request)  # the failed flush still waits its interval: no retry on every request
    assert retried_too_soon.captured_queries == []
    cpu.now, wall.now = 7.0, wall.now + INTERVAL
    handler(request)
    assert cpu_recorded() == pytest.approx(7.0)


def test_the_meter_is_the_first_middleware_and_ticks_on_every_request(client, settings, monkeypatch):
    assert settings.MIDDLEWARE[0] == "core.middleware.UsageMeterMiddleware"
    settings.PORTAL_USAGE_METER = True
    ticks = []
    monkeypatch.setattr(usage.meter, "tick", lambda: ticks.append(1))
    client.get("/healthz")
    client.get("/no-such-page/")  # a 404 is work too
    assert len(ticks) == 2


def test_the_meter_can_be_turned_off(settings):
    settings.PORTAL_USAGE_METER = False
    with pytest.raises(MiddlewareNotUsed):
        middleware()


def test_two_threads_due_at_once_flush_once(clocks):
    wall, cpu = clocks
    usage.meter.tick()
    cpu.now, wall.now = 2.0, wall.now + INTERVAL
    usage.meter.flush()
    usage.meter.tick()  # the other thread, a moment later: already flushed, not due
    assert cpu_recorded() == pytest.approx(2.0)


def test_a_forked_child_counts_from_zero():
    meter = usage.Meter(interval=INTERVAL, clock=FakeClock(), cpu=FakeClock(100.0))
    meter.tick()
    meter._counted = 100.0
    meter.restart()  # what os.register_at_fork runs in the child: its CPU clock starts at zero
    assert meter._counted == 0.0
    assert meter._due is None


# --- Workers: the task hook ---------------------------------------------------------------------------


def burn(seconds: float = 2.0, *, fail: bool = False) -> str:
    """A task that uses ``seconds`` of (fake) CPU."""
    usage.meter.cpu.now += seconds
    if fail:
        raise RuntimeError("the task failed")
    return "done"


def test_a_celery_task_run_through_core_queue_is_metered(clocks):
    wall, _ = clocks
    usage.meter.tick()  # the worker's earlier tasks started the interval
    wall.now += INTERVAL
    assert queue.run("tests.core.test_usage.burn", [2.0]) == "done"
    assert cpu_recorded() == pytest.approx(2.0)

    wall.now += INTERVAL
    with pytest.raises(RuntimeError):
        queue.run("tests.core.test_usage.burn", [1.5], {"fail": True})
    assert cpu_recorded() == pytest.approx(3.5)  # a failed task used CPU too


def test_a_django_q_task_is_metered(clocks):
    from django_q.tasks import async_task

    wall, _ = clocks
    usage.meter.tick()
    wall.now += INTERVAL
    async_task("tests.core.test_usage.burn", 2.5, sync=True)  # the worker, in this process
    # django-q2's worker ticks before each task (pre_execute): this task's CPU goes with the next flush.
    assert cpu_recorded() == 0
    wall.now += INTERVAL
    async_task("tests.core.test_usage.burn", 1.0, sync=True)
    assert cpu_recorded() == pytest.approx(2.5)


def test_the_task_hook_is_off_with_the_meter(clocks, settings):
    wall, _ = clocks
    settings.PORTAL_USAGE_METER = False
    usage.meter.tick()
    wall.now += INTERVAL
    queue.run("tests.core.test_usage.burn", [2.0])
    assert PortalUsage.objects.count() == 0


# --- Recording ---------------------------------------------------------------------------------------


def test_add_sums_into_the_hour_and_leaves_the_other_figure_unmeasured():
    at = datetime(2025, 3, 5, 10, 17, tzinfo=UTC)
    usage.add(cpu_seconds=1.25, at=at)
    usage.add(cpu_seconds=0.75, at=at + timedelta(minutes=40))
    usage.add(cpu_seconds=4.0, at=at + timedelta(hours=1))
    usage.add(db_commits=10, at=at + timedelta(hours=1))
    usage.add(cpu_seconds=0.0, db_commits=0, at=at)  # nothing to add: no row, no query
    rows = {row.hour: (row.cpu_seconds, row.db_commits) for row in PortalUsage.objects.all()}
    assert rows == {
        datetime(2025, 3, 5, 10, tzinfo=UTC): (2.0, None),  # no commit sample: not zero, unmeasured
        datetime(2025, 3, 5, 11, tzinfo=UTC): (4.0, 10),
    }


# --- The database's commits ------------------------------------------------------------------------------


def test_commit_counter_readings_become_deltas_and_a_reset_takes_the_counter(monkeypatch):
    """The rule, on any database: the counter's readings, as PostgreSQL would give them."""
    reset = datetime(2025, 3, 1, tzinfo=UTC)
    readings = iter([(1000, None), (1250, None), (1300, None), (40, None), (60, reset), (90, reset)])
    monkeypatch.setattr(usage, "read_commit_counter", lambda: next(readings))
    added = [usage.record_database_commits() for _ in range(6)]
    # First: the baseline only. A counter that went down, or a new reset time: the counter as it is.
    assert added == [0, 250, 50, 40, 60, 30]
    assert sum(row.db_commits for row in PortalUsage.objects.all()) == 430
    assert CounterReading.objects.get(name=usage.XACT_COMMIT).value == 90


def test_on_sqlite_commits_are_not_measured():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    assert usage.commits_measured() is False
    assert usage.record_database_commits() is None
    assert not PortalUsage.objects.exists()
    assert not CounterReading.objects.exists()


def commit_elsewhere(count: int) -> None:
    """``count`` transactions on a connection of their own, closed: its statistics reach the server."""
    import psycopg2

    db = connection.settings_dict
    other = psycopg2.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"], port=db["PORT"] or 5432
    )
    other.autocommit = True
    with other.cursor() as cursor:
        for _ in range(count):
            cursor.execute("SELECT 1")  # each statement outside a transaction is one commit
    other.close()


def wait_for_counter(at_least: int) -> None:
    deadline = time.monotonic() + 15
    while usage.read_commit_counter()[0] < at_least:
        assert time.monotonic() < deadline, "pg_stat_database did not catch up"
        time.sleep(0.2)


def test_on_postgresql_the_real_counter_is_sampled_and_a_reset_handled():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    assert usage.record_database_commits() == 0  # the baseline
    baseline = CounterReading.objects.get(name=usage.XACT_COMMIT).value

    commit_elsewhere(25)
    wait_for_counter(baseline + 25)
    added = usage.record_database_commits()
    assert 25 <= added < 25 + 500  # and whatever else ran meanwhile: these tests, autovacuum
    assert PortalUsage.objects.get().db_commits == added

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_reset()")  # this test database's statistics only
    commit_elsewhere(5)
    wait_for_counter(5)
    after_reset = usage.record_database_commits()
    reading = CounterReading.objects.get(name=usage.XACT_COMMIT)
    assert after_reset == reading.value >= 5  # the counter as it stands, never a negative delta
    assert reading.reset_at is not None
    assert PortalUsage.objects.get().db_commits == added + after_reset


def test_the_sampler_is_a_periodic_task_every_five_minutes():
    from core.periodic import PERIODIC_TASKS

    (task,) = [t for t in PERIODIC_TASKS if t.func == "core.tasks.record_database_commits"]
    assert task.cron == "*/5 * * * *"
