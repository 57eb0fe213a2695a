"""The portal's own cost, as core.usage meters it: one row per hour, and the last reading of a counter.

Infrastructure, not domain: nothing here knows about jobs or requests. The
automation metrics (requests_app.metrics) divide these by the jobs run.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class PortalUsage(models.Model):
    """What the portal itself used in one hour (UTC): CPU seconds of its processes, commits in its database.

    Each figure is NULL until its meter adds to the hour: an hour with CPU but no
    commit sample (SQLite, or no worker running the sampler) says "not measured",
    not zero.
    """

    hour = models.DateTimeField(unique=True, help_text="Start of the hour, UTC.")
    cpu_seconds = models.FloatField(
        null=True, blank=True, help_text="CPU time of the web processes and task workers."
    )
    db_commits = models.BigIntegerField(
        null=True, blank=True, help_text="Transactions committed in the portal's database (PostgreSQL only)."
    )

    class Meta:
        ordering = ["-hour"]
        verbose_name = "portal usage"
        verbose_name_plural = "portal usage"
        constraints = [
            models.CheckConstraint(condition=Q(cpu_seconds__gte=0), name="portalusage_cpu_gte_0"),
            models.CheckConstraint(condition=Q(db_commits__gte=0), name="portalusage_commits_gte_0"),
        ]

    def __str__(self) -> str:
        return f"usage {self.hour:%Y-%m-%d %H:00}"


class CounterReading(models.Model):
    """The last value read from a cumulative counter, so the next reading becomes a delta.

    ``reset_at`` is the counter's own reset time where it has one
    (``pg_stat_database.stats_reset``): when it changes, the counter restarted.
    """

    name = models.CharField(max_length=100, unique=True)
    value = models.BigIntegerField()
    reset_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} = {self.value}"
