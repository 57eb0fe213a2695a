"""Queue a backup of one client immediately: ``manage.py backup_now CLIENT_ID``.

A client has one backup at a time: when one is already queued or running, the
command names that job and queues nothing.
"""

from django.core.management.base import BaseCommand, CommandError

from catalog.choices import JobTrigger
from catalog.errors import InvalidTransition
from catalog.models import BackupClient
from catalog.services import jobs


class Command(BaseCommand):
    help = "Queue a backup of the given client now."

    def add_arguments(self, parser) -> None:
        parser.add_argument("client_id", type=int)

    def handle(self, *args, client_id: int, **options) -> None:
        try:
            client = BackupClient.objects.get(pk=client_id)
        except BackupClient.DoesNotExist as exc:
            raise CommandError(f"No backup client with id {client_id}.") from exc
        try:
            job, created = jobs.get_or_queue_backup(client, trigger=JobTrigger.USER)
        except InvalidTransition as exc:
            raise CommandError(str(exc)) from exc
        if created:
            self.stdout.write(f"Queued backup job {job.pk} for {client}.")
        else:
            state = job.get_state_display().lower()
            self.stdout.write(f"A backup of {client} is already {state} (job {job.pk}); nothing new queued.")
