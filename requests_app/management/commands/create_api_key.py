"""``manage.py create_api_key USERNAME --name NAME``: prints the new key, and nothing else, on stdout."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from requests_app.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key for an integration acting as USERNAME; the key is shown once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="the integration, e.g. 'ServiceNow production'")
        parser.add_argument(
            "--integration",
            action="store_true",
            help="an integration user's key: may approve and reject without a person's MFA",
        )

    def handle(self, *args, username: str, name: str, integration: bool = False, **options) -> None:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {username!r}.")
        if not name.strip():
            raise CommandError("Give the integration a name with --name.")
        _, key = ApiKey.issue(user=user, name=name.strip(), integration=integration)
        self.stdout.write(key)
