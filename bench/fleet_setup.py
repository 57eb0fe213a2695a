"""The fleet simulator's set-up, run inside the portal's environment (bench/fleet.py calls it).

    DATABASE_URL=... python bench/fleet_setup.py AGENTS CLIENTS_PER_AGENT OUT.json

Creates one cost centre, one application ("fleet") owned by one person with a
password (the dashboard probe signs in as them), a storage target, a policy,
``AGENTS × CLIENTS_PER_AGENT`` clients waiting for their host to enrol, and one
enrolment token per host issued by ``catalog.services.agents.issue_enrolment_token``
(the real, one-time tokens). The policy starts never due, so idle polls can be
measured first; ``fleet_inspect.py resume SCHEDULE`` gives it its cron. Writes the
tokens and the ids the simulator needs as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from decimal import Decimal

import django

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import transaction  # noqa: E402

from catalog.choices import Plugin  # noqa: E402
from catalog.models import (  # noqa: E402
    Application,
    BackupClient,
    CostCenter,
    ProtectionPolicy,
    StorageTarget,
)
from catalog.services import agents  # noqa: E402

IDLE_SCHEDULE = "0 0 1 1 *"
OWNER, OWNER_PASSWORD = "fleet-owner", "fleet-owner-pass-7d1c"  # noqa: S105 - a scratch database


def hostname(index: int) -> str:
    return f"a{index:05d}.fleet.example.com"


def main(n_agents: int, per_agent: int, out: str) -> None:
    started = time.monotonic()
    user_model = get_user_model()
    owner, _ = user_model.objects.get_or_create(username=OWNER, defaults={"email": "owner@fleet.example.com"})
    owner.set_password(OWNER_PASSWORD)
    owner.save()
    cost_center, _ = CostCenter.objects.get_or_create(
        code="FLEET", defaults={"name": "Fleet", "owner_email": "fleet@example.com"}
    )
    app, _ = Application.objects.get_or_create(
        slug="fleet", defaults={"name": "Fleet", "cost_center": cost_center}
    )
    app.owners.add(owner)
    target, _ = StorageTarget.objects.get_or_create(
        name="fleet-storage", defaults={"location": "/mnt/protection", "capacity_bytes": 2**62}
    )
    policy, _ = ProtectionPolicy.objects.get_or_create(
        name="Fleet",
        defaults={
            # Never due while the fleet enrols and idles: bench/fleet_inspect.py resume sets SCHEDULE.
            "schedule": IDLE_SCHEDULE,
            "retention_days": 7,
            "rpo_hours": 24,
            "storage_target": target,
            "price_per_gb_month": Decimal("0.02"),
            "max_retries": 3,
        },
    )
    clients = [
        BackupClient(
            application=app,
            name=f"c{i:05d}-{j}",
            hostname=hostname(i),
            plugin=Plugin.FILES,
            options={"paths": ["/srv/app"]},
            policy=policy,
        )
        for i in range(n_agents)
        for j in range(per_agent)
    ]
    with transaction.atomic():
        BackupClient.objects.bulk_create(clients, batch_size=1000)
    tokens = [agents.issue_enrolment_token(application=app, hostname=hostname(i))[1] for i in range(n_agents)]
    first_client = BackupClient.objects.filter(application=app).order_by("pk").first()
    with open(out, "w") as handle:
        json.dump(
            {
                "hosts": [hostname(i) for i in range(n_agents)],
                "tokens": tokens,
                "owner": OWNER,
                "owner_password": OWNER_PASSWORD,
                "application": app.slug,
                "client_id": first_client.pk,
                "setup_seconds": round(time.monotonic() - started, 1),
            },
            handle,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
