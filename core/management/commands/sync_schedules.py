"""Register core.periodic.PERIODIC_TASKS as django-q2 Schedules (idempotent)."""

from functools import reduce
from operator import or_

from django.core.management.base import BaseCommand
from django.db.models import Q
from django_q.models import Schedule

from core.periodic import PERIODIC_TASKS, project_packages


class Command(BaseCommand):
    help = (
        "Create or update the django-q2 schedules from the portal's periodic task list, and remove the"
        " schedules of the project's functions that the list no longer names. Schedules of other"
        " functions (added by hand for django or a third-party package) are left alone."
    )

    def handle(self, *args, **options) -> None:
        for task in PERIODIC_TASKS:
            _, created = Schedule.objects.update_or_create(
                name=task.name,
                defaults={
                    "func": task.func,
                    "schedule_type": Schedule.CRON,
                    "cron": task.cron,
                    "repeats": -1,
                },
            )
            self.stdout.write(f"{'created' if created else 'updated'}: {task.name} ({task.cron})")
        # Ours: any schedule calling into one of the project's packages, whichever app the
        # function lives in, so a task renamed or moved in any app leaves no schedule behind.
        ours = reduce(or_, (Q(func__startswith=f"{package}.") for package in sorted(project_packages())))
        known = [task.name for task in PERIODIC_TASKS]
        stale, _ = Schedule.objects.filter(ours).exclude(name__in=known).delete()
        if stale:
            self.stdout.write(f"removed {stale} schedule(s) no longer in the list")
