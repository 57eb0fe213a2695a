"""Register portal.periodic.PERIODIC_TASKS as django-q2 Schedules (idempotent)."""

from django.core.management.base import BaseCommand
from django.db.models import Q
from django_q.models import Schedule

from portal.periodic import PERIODIC_TASKS


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules from the portal's periodic task list."

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
        known = [task.name for task in PERIODIC_TASKS]
        ours = Q(func__startswith="catalog.") | Q(func__startswith="requests_app.")
        stale, _ = Schedule.objects.filter(ours).exclude(name__in=known).delete()
        if stale:
            self.stdout.write(f"removed {stale} schedule(s) no longer in the list")
