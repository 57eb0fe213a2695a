"""Rate limits per integration and per person: a 429 with a code and Retry-After, never someone else's."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.helpers import key_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/applications/"


@pytest.fixture
def low_rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api_burst": "3/minute", "api_sustained": "5/hour"},
    }


def test_the_fourth_request_in_a_minute_is_429(low_rates, owner_api, app):
    codes = [owner_api.get(URL).status_code for _ in range(4)]

    assert codes == [200, 200, 200, 429]
    response = owner_api.get(URL)
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


def test_posts_count_too(low_rates, owner_api, mine):
    codes = [owner_api.post(f"/api/v1/clients/{mine.client.pk}/backup-now/").status_code for _ in range(4)]

    assert codes == [202, 200, 200, 429]  # one backup queued; the repeats answer with it


def test_each_integration_has_its_own_budget(low_rates, owner, owner_api, app):
    for _ in range(3):
        owner_api.get(URL)
    assert owner_api.get(URL).status_code == 429

    assert key_client(owner, name="Jira").get(URL).status_code == 200


def test_people_signed_in_are_limited_as_well(low_rates, owner, app):
    client = APIClient()
    client.force_login(owner)

    assert [client.get(URL).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_unauthenticated_requests_are_refused_before_they_count(low_rates, app):
    assert {APIClient().get(URL).status_code for _ in range(5)} == {401}


def test_the_default_rates_leave_room_for_a_busy_integration(owner_api, app):
    assert {owner_api.get(URL).status_code for _ in range(50)} == {200}
