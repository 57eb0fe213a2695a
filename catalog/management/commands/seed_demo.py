"""``manage.py seed_demo``: the demo estate with a month of history; safe to run again."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from catalog import demo


class Command(BaseCommand):
    help = (
        "Create (or refresh) demo data: cost centres, applications, policies, agents, clients, "
        "a month of backup history and a few open alerts. Running it again changes nothing "
        "but the demo passwords."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner-password", default=demo.DEFAULT_OWNER_PASSWORD)
        parser.add_argument("--admin-password", default=demo.DEFAULT_ADMIN_PASSWORD)

    def handle(self, *args, **options):
        try:
            result = demo.seed(
                owner_password=options["owner_password"], admin_password=options["admin_password"]
            )
        except ValidationError as exc:
            raise CommandError("Password rejected: " + " ".join(exc.messages)) from exc
        counts = ", ".join(f"{number} {name}" for name, number in result.counts.items())
        self.stdout.write(
            f"Demo data ready: {counts} (history created for {result.history_clients} clients)."
        )
        self.stdout.write(f"\nOpen {demo.DEMO_URL} and sign in as:")
        for username, password, role in result.logins:
            self.stdout.write(f"  {username} / {password}    ({role})")
