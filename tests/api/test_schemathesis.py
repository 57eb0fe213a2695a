"""Schemathesis against the live server: generated requests to every operation, valid and invalid.

Each operation gets a bounded number of examples in each generation mode
(``EXAMPLES``, derandomised so CI runs the same cases every time), sent with a
backup-team key over a seeded estate. Every answer must be no 5xx, carry a
documented status code and content type, and match the schema of that status.
"""

from __future__ import annotations

import pytest
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, Phase, given  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from requests_app.models import ApiKey  # noqa: E402
from tests import factories  # noqa: E402
from tests.factories import build_estate  # noqa: E402
from tests.requests.factories import submit_client, submit_restore  # noqa: E402

EXAMPLES = 15
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def seed(backup_team_group) -> str:
    """Two applications with clients, backups, jobs, alerts and open requests; a backup-team key."""
    owner = factories.UserFactory(username="fuzz_owner")
    admin = factories.UserFactory(username="fuzz_admin", is_staff=True)
    admin.groups.add(backup_team_group)
    policy = factories.ProtectionPolicyFactory(name="Gold", auto_approve_clients=False)
    for slug in ("orders", "payroll"):
        app = factories.ApplicationFactory(slug=slug, owners=[owner])
        estate = build_estate(app)
        factories.JobFactory(client=estate.client)
        factories.AlertFactory(client=estate.client)
        submit_restore(owner, backup=estate.backup)
        submit_client(owner, application=app, policy=policy)
    _, key = ApiKey.issue(user=admin, name="schemathesis")
    return key


@pytest.mark.django_db(transaction=True)
def test_generated_requests_find_no_server_error_and_no_schema_violation(
    live_server, settings, backup_team_group, monkeypatch
):
    # Notifications and webhooks of the requests it creates are not under test here, and in
    # django-q's sync mode each would run in the server's thread: enqueue nothing.
    monkeypatch.setattr("core.queue._send", lambda path, args, kwargs: None)
    # Hundreds of requests in a few seconds from one key: lift the limits for this run.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api_burst": "100000/minute", "api_sustained": "100000/hour"},
    }
    headers = {"Authorization": f"Token {seed(backup_team_group)}"}
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 31  # 21 reads, 10 writes
    for operation in operations:
        modes = [schemathesis.GenerationMode.POSITIVE]
        if len(operation.query) or operation.body or operation.method.upper() == "POST":
            # A detail GET has only its id, and no invalid id that routes: nothing negative to send.
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def call(case) -> None:
                case.call_and_validate(base_url=live_server.url, headers=headers, checks=CHECKS, timeout=10)

            call()
