"""The portal's own cost, metered cheaply: CPU seconds of its processes and commits in its database, by hour.

Two figures, each added to the hour's ``core.models.PortalUsage`` row:

- **CPU seconds**: every web process and task worker keeps one ``Meter``. A
  request (``core.middleware.UsageMeterMiddleware``) or a task calls ``tick()``
  (after the task in ``core.queue.run`` under Celery, before it on django-q2's
  ``pre_execute`` signal): one monotonic clock read and a comparison, no query.
  At most once per ``PORTAL_USAGE_FLUSH_SECONDS`` (60) a tick flushes: it adds
  the CPU time the whole process used since the last flush
  (``time.process_time()`` counts every thread of the process: requests, tasks,
  garbage collection, whatever ran in between) to the current hour, in one
  UPDATE. A flush that fails is logged and its CPU time kept for the next one;
  it never fails the request or the task. What a process used after its last
  flush (at most a minute's worth) is lost when it exits.
- **Commits**: on PostgreSQL, ``record_database_commits`` (a periodic task,
  every 5 minutes) reads ``pg_stat_database.xact_commit`` for the portal's
  database and adds the increase since the previous reading; after a statistics
  reset (``stats_reset`` changed, or the counter went down) it adds the counter
  as it stands. SQLite keeps no such counter: nothing is recorded and the
  figures say "not measured".

Neither knows about jobs: ``requests_app.metrics`` reads ``weekly_usage`` and
divides by the jobs run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncWeek
from django.utils import timezone

from core.models import CounterReading, PortalUsage

log = logging.getLogger(__name__)

#: The CounterReading that holds the last pg_stat_database.xact_commit seen.
XACT_COMMIT = "postgresql.xact_commit"


# --- Recording ------------------------------------------------------------------------------------


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def add(*, cpu_seconds: float = 0.0, db_commits: int = 0, at: datetime | None = None) -> None:
    """Add to the hour of ``at`` (now): one UPDATE, and an INSERT the first time in the hour."""
    if cpu_seconds <= 0 and db_commits <= 0:
        return
    hour = hour_of(at or timezone.now())
    changes = {}
    if cpu_seconds > 0:
        changes["cpu_seconds"] = Coalesce(F("cpu_seconds"), Value(0.0)) + Value(float(cpu_seconds))
    if db_commits > 0:
        changes["db_commits"] = Coalesce(F("db_commits"), Value(0)) + Value(int(db_commits))
    # Inside a caller's transaction a failure must not break it: a savepoint. Outside (the usual
    # case: after a request or a task) the UPDATE commits by itself.
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        if PortalUsage.objects.filter(hour=hour).update(**changes):
            return
        try:
            with transaction.atomic():
                PortalUsage.objects.create(
                    hour=hour,
                    cpu_seconds=float(cpu_seconds) if cpu_seconds > 0 else None,
                    db_commits=int(db_commits) if db_commits > 0 else None,
                )
        except IntegrityError:  # another process created the hour first
            PortalUsage.objects.filter(hour=hour).update(**changes)


def add_cpu_seconds(seconds: float) -> None:
    add(cpu_seconds=seconds)


class Meter:
    """This process's CPU time, added to the current hour at most once per interval.

    ``clock`` (wall time, monotonic) decides when to flush; ``cpu`` (the process's
    CPU time) is read only when flushing. Both, the interval and ``record`` can be
    replaced, for tests.
    """

    def __init__(
        self,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
        record: Callable[[float], None] = add_cpu_seconds,
    ):
        self.interval = interval
        self.clock = clock
        self.cpu = cpu
        self.record = record
        self.restart()

    def restart(self) -> None:
        """Count from zero: a new process's CPU clock starts at zero (a forked child's too)."""
        self._lock = threading.Lock()
        self._counted = 0.0  # CPU seconds of this process already recorded
        self._due: float | None = None  # the first tick starts the interval

    def _interval(self) -> float:
        return self.interval if self.interval is not None else settings.PORTAL_USAGE_FLUSH_SECONDS

    def tick(self) -> None:
        """A request or a task ended: flush if the interval has passed, else nothing at all."""
        due = self._due
        if due is None:
            self._due = self.clock() + self._interval()
        elif self.clock() >= due:
            self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Record the CPU time used since the last flush; never raises."""
        if not self._lock.acquire(blocking=False):
            return  # another thread of this process is flushing
        try:
            now = self.clock()
            if not force and self._due is not None and now < self._due:
                return  # flushed by another thread in the meantime
            self._due = now + self._interval()
            used = self.cpu()
            delta = used - self._counted
            if delta <= 0:
                return
            try:
                self.record(delta)
            except Exception:
                # Kept: the next flush adds it. The request or task that ticked goes on.
                log.warning("usage meter: could not record %.3f CPU seconds", delta, exc_info=True)
                return
            self._counted = used
        finally:
            self._lock.release()


#: The meter of this process (a forked child starts its own from zero).
meter = Meter()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: meter.restart())


def task_tick(**_signal) -> None:
    """What a worker calls for each task: after it (core.queue.run), or before it (django-q2's pre_execute).

    Either way the flush adds all the CPU the process used up to then, the tasks before included.
    """
    if settings.PORTAL_USAGE_METER:
        meter.tick()


# --- Database commits -------------------------------------------------------------------------------


def commits_measured() -> bool:
    """Whether this database has a commit counter to read (PostgreSQL; not SQLite)."""
    return connection.vendor == "postgresql"


def read_commit_counter() -> tuple[int, datetime | None] | None:
    """``pg_stat_database.xact_commit`` and ``stats_reset`` of this database, or None where there is none."""
    if not commits_measured():
        return None
    with connection.cursor() as cursor:
        # Statistics are a snapshot taken once per transaction: take a fresh one.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT xact_commit, stats_reset FROM pg_stat_database WHERE datname = current_database()"
        )
        value, reset_at = cursor.fetchone()
    return int(value), reset_at


def record_database_commits(now: datetime | None = None) -> int | None:
    """Add the commits since the last reading to the current hour; the number added, None if not measured.

    The first reading only sets the baseline. A reset of the statistics (the reset
    time changed, or the counter went down) adds the counter as it stands: the
    commits since the reset.
    """
    now = now or timezone.now()
    with transaction.atomic():
        # Locked first, then read: two samplers at once add each commit once.
        last = CounterReading.objects.select_for_update().filter(name=XACT_COMMIT).first()
        reading = read_commit_counter()
        if reading is None:
            return None
        value, reset_at = reading
        if last is None:
            CounterReading.objects.create(name=XACT_COMMIT, value=value, reset_at=reset_at, read_at=now)
            return 0
        restarted = value < last.value or (reset_at is not None and reset_at != last.reset_at)
        added = value if restarted else value - last.value
        last.value, last.reset_at, last.read_at = value, reset_at, now
        last.save(update_fields=["value", "reset_at", "read_at"])
        add(db_commits=added, at=now)
    return added


# --- Reading ----------------------------------------------------------------------------------------


def weekly_usage(since: datetime, until: datetime) -> QuerySet:
    """One row per ISO week (Monday 00:00 in TIME_ZONE) of [since, until): ``week``, the two sums.

    A sum is None when no hour of the week has that figure.
    """
    return (
        PortalUsage.objects.filter(hour__gte=since, hour__lt=until)
        .annotate(week=TruncWeek("hour"))
        .order_by()
        .values("week")
        .annotate(portal_cpu_seconds=Sum("cpu_seconds"), database_commits=Sum("db_commits"))
    )
