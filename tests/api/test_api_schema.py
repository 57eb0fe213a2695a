"""The OpenAPI schema: valid, free of warnings, the public paths only, and the docs need no internet."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.api import contract
from tests.api.contract import CLIENT_REQUEST_FIELDS, RESTORE_REQUEST_FIELDS

pytestmark = pytest.mark.django_db

PATHS = {
    "/api/v1/restore-requests/",
    "/api/v1/restore-requests/{id}/",
    "/api/v1/restore-requests/{id}/approve/",
    "/api/v1/restore-requests/{id}/reject/",
    "/api/v1/restore-requests/{id}/cancel/",
    "/api/v1/client-requests/",
    "/api/v1/client-requests/{id}/",
    "/api/v1/client-requests/{id}/approve/",
    "/api/v1/client-requests/{id}/reject/",
    "/api/v1/client-requests/{id}/cancel/",
    "/api/v1/client-requests/{id}/enrolment-token/",
    "/api/v1/applications/",
    "/api/v1/applications/{id}/",
    "/api/v1/policies/",
    "/api/v1/policies/{id}/",
    "/api/v1/clients/",
    "/api/v1/clients/{id}/",
    "/api/v1/clients/{id}/backup-now/",
    "/api/v1/clients/{id}/files/",
    "/api/v1/backups/",
    "/api/v1/backups/{id}/",
    "/api/v1/backups/{id}/files/",
    "/api/v1/jobs/",
    "/api/v1/jobs/{id}/",
    "/api/v1/alerts/",
    "/api/v1/alerts/{id}/",
    "/api/v1/reports/",
    "/api/v1/reports/{id}/",
    "/api/v1/reports/{id}/download/",
}


@pytest.fixture
def schema() -> dict:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_schema_generates_without_warnings_and_validates(tmp_path):
    target = tmp_path / "openapi.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    assert target.read_text().startswith("openapi: 3.0")


def test_schema_is_valid_openapi_3(schema):
    import openapi_spec_validator as validator

    validator.validate(schema)
    assert schema["openapi"].startswith("3.")


def test_schema_documents_the_public_api_only(schema):
    assert set(schema["paths"]) == PATHS  # no /api/agent/v1/, no format suffixes


def test_representations_in_the_schema_match_the_contract(schema):
    components = schema["components"]["schemas"]

    assert set(components["RestoreRequest"]["properties"]) == RESTORE_REQUEST_FIELDS
    assert set(components["ClientRequest"]["properties"]) == CLIENT_REQUEST_FIELDS
    assert set(components["Client"]["properties"]) == contract.CLIENT_FIELDS
    assert set(components["Backup"]["properties"]) == contract.BACKUP_FIELDS
    assert set(components["Policy"]["properties"]) == contract.POLICY_FIELDS
    assert set(components["Job"]["properties"]) == contract.JOB_FIELDS
    assert set(components["Alert"]["properties"]) == contract.ALERT_FIELDS
    assert set(components["RestoreRequestCreateRequest"]["properties"]) == {
        "backup",
        "target_agent",
        "target_location",
        "overwrite",
        "paths",
        "reason",
        "external_ref",
    }


def test_every_post_takes_an_idempotency_key_and_the_token_is_a_security_scheme(schema):
    posts = [op for item in schema["paths"].values() for method, op in item.items() if method == "post"]

    assert len(posts) == 10
    for operation in posts:
        assert "Idempotency-Key" in [p["name"] for p in operation.get("parameters", [])]
        assert {"apiKeyAuth": []} in operation["security"]
    assert schema["components"]["securitySchemes"]["apiKeyAuth"]["name"] == "Authorization"


def test_lists_of_backups_and_jobs_are_cursor_paged(schema):
    for path in ("/api/v1/backups/", "/api/v1/jobs/"):
        operation = schema["paths"][path]["get"]
        assert "cursor" in [p["name"] for p in operation["parameters"]]
        assert "page" not in [p["name"] for p in operation["parameters"]]


def test_swagger_ui_uses_local_assets_only():
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert assets, html
    assert [a for a in assets if re.match(r"^(https?:)?//", a)] == []
    assert "swagger-ui" in html
    assert not re.search(r"https?://(cdn|unpkg|cdnjs|fonts)\.", html)
    local = [a.removeprefix("/static/") for a in assets if a.startswith("/static/")]
    assert len(local) >= 3  # the script, the style sheet, the favicon
    for asset in local:
        assert finders.find(asset), f"{asset} is not shipped with the portal"
