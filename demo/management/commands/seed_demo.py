"""``manage.py seed_demo``: the demo estate, a month of history, last month's reports; safe to run again."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from demo import data, reporting


class Command(BaseCommand):
    help = (
        "Create (or refresh) demo data: cost centres, applications, policies, agents, clients, "
        "a month of backup history, a few open alerts and last month's reports. Running it again "
        "changes nothing but the demo passwords."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner-password", default=data.DEFAULT_OWNER_PASSWORD)
        parser.add_argument("--admin-password", default=data.DEFAULT_ADMIN_PASSWORD)

    def handle(self, *args, **options):
        now = timezone.now()
        try:
            result = data.seed(
                owner_password=options["owner_password"], admin_password=options["admin_password"], now=now
            )
        except ValidationError as exc:
            raise CommandError("Password rejected: " + " ".join(exc.messages)) from exc
        counts = ", ".join(f"{number} {name}" for name, number in result.counts.items())
        self.stdout.write(
            f"Demo data ready: {counts} (history created for {result.history_clients} clients)."
        )
        reports = reporting.seed_reports(now)
        self.stdout.write(
            f"Reports for {reports.month.label}: {reports.generated} generated, {reports.kept} already there."
        )
        self.stdout.write(f"\nOpen {data.DEMO_URL} and sign in as:")
        for username, password, role in result.logins:
            self.stdout.write(f"  {username} / {password}    ({role})")
