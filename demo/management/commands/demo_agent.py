"""Prepare the demo's real agent: a folder to protect, a client waiting for it, a token.

``make demo`` runs ``demo_agent --prepare`` (prints an enrolment token, or a
re-key token when the demo agent enrolled before, nothing else, on stdout),
enrols ``backup-agent`` with it, then ``demo_agent
--backup-now`` so the first real backup lands in the catalog within seconds.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from catalog.allow_list import enrol_flags
from catalog.choices import ClientStatus, JobTrigger, Plugin
from catalog.models import Agent, Application, BackupClient, ProtectionPolicy, StorageTarget
from catalog.services import agents, jobs

HOSTNAME = "demo-agent.local"
CLIENT_NAME = "demo-files"
APPLICATION = "webshop"


def demo_data_dir() -> Path:
    return Path(settings.VAR_DIR) / "demo-data" / APPLICATION


def write_demo_files(root: Path) -> None:
    """A small but real tree: nested folders, an empty one, a symlink, a binary file."""
    (root / "media" / "products").mkdir(parents=True, exist_ok=True)
    (root / "cache").mkdir(exist_ok=True)
    (root / "config.ini").write_text("[shop]\ncurrency = EUR\n")
    for n in range(20):
        (root / "media" / "products" / f"item-{n:03d}.txt").write_text(f"product {n}\n" * (n + 1) * 50)
    (root / "media" / "logo.bin").write_bytes(bytes(range(256)) * 64)
    link = root / "current-config"
    if not link.is_symlink():
        link.symlink_to("config.ini")


class Command(BaseCommand):
    help = "Prepare (or kick) the local demo agent."

    def add_arguments(self, parser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--prepare", action="store_true", help="print an enrolment token")
        group.add_argument("--backup-now", action="store_true", help="queue a backup of the demo client")
        group.add_argument(
            "--allow-flags",
            action="store_true",
            help="print the enrol command's --allow-* arguments for the demo client, one per line",
        )

    def handle(self, *args, prepare: bool, backup_now: bool, allow_flags: bool, **options) -> None:
        try:
            application = Application.objects.get(slug=APPLICATION)
        except Application.DoesNotExist as exc:
            raise CommandError("Run seed_demo first.") from exc
        if prepare:
            self._prepare(application)
        elif allow_flags:
            client = BackupClient.objects.select_related("policy__storage_target").get(
                application=application, name=CLIENT_NAME
            )
            storage = client.policy.storage_target.location
            restores = Path(settings.VAR_DIR).resolve() / "restores"
            flags = [*enrol_flags(client.plugin, client.options, storage), "--restore-root", str(restores)]
            self.stdout.write("\n".join(flags))
        else:
            client = BackupClient.objects.get(application=application, name=CLIENT_NAME)
            job = jobs.queue_backup(client, trigger=JobTrigger.USER)
            self.stderr.write(f"Queued backup job {job.pk} of {client}.")

    def _prepare(self, application: Application) -> None:
        data = demo_data_dir()
        write_demo_files(data)
        target = StorageTarget.objects.order_by("pk").first()
        if target is None:
            raise CommandError("Run seed_demo first: there is no storage target.")
        policy, _ = ProtectionPolicy.objects.get_or_create(
            name="Demo (every 5 minutes)",
            defaults={
                "description": "Shows the scheduler at work during the demo: a full every hour, "
                "incrementals between.",
                "full_every_backups": 12,
                "schedule": "*/5 * * * *",
                "retention_days": 2,
                "rpo_hours": 1,
                "storage_target": target,
                "restore_test_interval_days": 1,
                "price_per_gb_month": Decimal("0.10"),
                "auto_approve_clients": True,
            },
        )
        BackupClient.objects.get_or_create(
            application=application,
            name=CLIENT_NAME,
            defaults={
                "hostname": HOSTNAME,
                "plugin": Plugin.FILES,
                "options": {"paths": [str(data.resolve())]},
                "policy": policy,
                "status": ClientStatus.PENDING_ENROLMENT,
            },
        )
        # Run by the operator of this machine, the backup team of the demo: an agent
        # enrolled by an earlier run gets a re-key token, as a rebuilt server would.
        agent = Agent.objects.filter(hostname=HOSTNAME).first()
        if agent is not None and agent.is_enrolled:
            _, token = agents.issue_rekey_token(agent, created_by=None)
        else:
            _, token = agents.issue_enrolment_token(application=application, hostname=HOSTNAME)
        self.stdout.write(token)
