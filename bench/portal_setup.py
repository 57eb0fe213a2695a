"""Create what the agent benchmark needs in a scratch portal database; print it as JSON.

Run with the benchmark's environment (DATABASE_URL of a scratch SQLite file).
"""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal

import django

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
django.setup()

from catalog.choices import ClientStatus, Plugin  # noqa: E402
from catalog.models import (  # noqa: E402
    Application,
    BackupClient,
    CostCenter,
    ProtectionPolicy,
    StorageTarget,
)
from catalog.services import agents  # noqa: E402

HOSTNAME = "bench-agent.local"


def main(storage: str, source: str) -> None:
    cost_center, _ = CostCenter.objects.get_or_create(
        code="BENCH", defaults={"name": "Bench", "owner_email": "b@x"}
    )
    app, _ = Application.objects.get_or_create(
        slug="bench", defaults={"name": "Bench", "cost_center": cost_center}
    )
    target, _ = StorageTarget.objects.update_or_create(
        name="bench", defaults={"location": storage, "capacity_bytes": 2**50}
    )
    policy, _ = ProtectionPolicy.objects.get_or_create(
        name="Bench",
        defaults={
            "schedule": "0 3 * * *",
            "retention_days": 1,
            "rpo_hours": 24,
            "storage_target": target,
            "price_per_gb_month": Decimal("0"),
        },
    )
    client, _ = BackupClient.objects.update_or_create(
        application=app,
        name="tree",
        defaults={
            "hostname": HOSTNAME,
            "plugin": Plugin.FILES,
            "options": {"paths": [source]},
            "policy": policy,
        },
    )
    token = ""
    if client.status == ClientStatus.PENDING_ENROLMENT:
        _, token = agents.issue_enrolment_token(application=app, hostname=HOSTNAME)
    print(json.dumps({"client_id": client.pk, "token": token, "hostname": HOSTNAME}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
