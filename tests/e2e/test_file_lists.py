"""File lists end to end with the real agent: back up, browse through the API and the web page,
restore two files and one folder elsewhere, and one table of a PostgreSQL backup into a scratch database."""

from __future__ import annotations

import os
import uuid

import pytest
from rest_framework.test import APIClient

from catalog.choices import JobKind, JobState, Plugin
from catalog.models import Job
from requests_app.models import RestoreRequest
from tests import factories
from tests.e2e import scenario
from tests.e2e.scenario import psql
from tests.helpers import log_in

pytestmark = pytest.mark.e2e


def backed_up(agent_cli, tmp_path, **kwargs):
    setup, backup = scenario.backed_up(agent_cli, tmp_path, **kwargs)
    assert backup.job.state == JobState.SUCCEEDED, (backup.job.error_message, backup.job.log_tail)
    return setup, backup


def owner_of(setup):
    owner = factories.UserFactory(username="restorer")
    setup.application.owners.add(owner)
    api = APIClient()
    api.force_authenticate(owner)
    return owner, api


def restore(api, agent_cli, backup, target, paths) -> Job:
    response = api.post(
        "/api/v1/restore-requests/",
        {
            "backup": backup.pk,
            "target_agent": scenario.HOSTNAME,
            "target_location": str(target),
            "paths": paths,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    request = RestoreRequest.objects.get(pk=response.json()["id"])
    assert request.job_id, f"expected an approved restore: {request.status} {request.approval_rule}"
    result = agent_cli.run_once()
    assert result.returncode == 0, result.stderr[-3000:]
    job = Job.objects.get(pk=request.job_id)
    assert job.kind == JobKind.RESTORE
    return job


def test_browse_then_restore_two_files_and_a_folder_to_a_new_place(agent_cli, tmp_path, client):
    source = tmp_path / "source"
    (source / "invoices" / "2026").mkdir(parents=True)
    (source / "invoices" / "2026" / "2026-10.pdf").write_bytes(os.urandom(70_000))
    (source / "invoices" / "2026" / "2026-11.pdf").write_bytes(os.urandom(50_000))
    (source / "media" / "thumbs").mkdir(parents=True)
    (source / "media" / "thumbs" / "a.jpg").write_bytes(os.urandom(9_000))
    (source / "media" / "logo.png").write_bytes(os.urandom(4_000))
    setup, backup = backed_up(agent_cli, tmp_path)
    assert backup.has_file_list and backup.index_entries > 10
    owner, api = owner_of(setup)

    # Browse: the API lists the folder, the web page shows it.
    folder = f"{setup.source}/invoices/2026"
    listing = api.get(f"/api/v1/backups/{backup.pk}/files/", {"path": folder}).json()
    names = {entry["name"]: entry for entry in listing["results"]}
    assert set(names) == {"2026-10.pdf", "2026-11.pdf"}
    assert names["2026-10.pdf"]["size"] == 70_000 and names["2026-10.pdf"]["type"] == "file"
    client.force_login(owner)
    page = client.get(f"/clients/{setup.client.pk}/backups/{backup.pk}/files/", {"path": folder})
    assert page.status_code == 200 and "2026-11.pdf" in page.content.decode()

    # Restore two files and one folder somewhere new.
    target = tmp_path / "restored"
    chosen = [f"{folder}/2026-10.pdf", f"{setup.source}/data.bin", f"{setup.source}/media"]
    job = restore(api, agent_cli, backup, target, chosen)
    assert job.state == JobState.SUCCEEDED, (job.error_message, job.log_tail)

    restored = target / str(setup.source).lstrip("/")
    expected = {
        b"invoices": None,
        b"invoices/2026": None,
        b"invoices/2026/2026-10.pdf": (source / "invoices/2026/2026-10.pdf").read_bytes(),
        b"data.bin": (source / "data.bin").read_bytes(),
        b"media": None,
        b"media/logo.png": (source / "media/logo.png").read_bytes(),
        b"media/thumbs": None,
        b"media/thumbs/a.jpg": (source / "media/thumbs/a.jpg").read_bytes(),
    }
    found = {
        os.fsencode(path.relative_to(restored)): (None if path.is_dir() else path.read_bytes())
        for path in restored.rglob("*")
    }
    assert found == expected  # the bytes, and nothing else at the target
    # Above the source, only the folders leading to it.
    assert [p for p in target.rglob("*") if p.is_file() and not p.is_relative_to(restored)] == []


def test_a_path_outside_the_file_list_is_refused(agent_cli, tmp_path):
    setup, backup = backed_up(agent_cli, tmp_path)
    _, api = owner_of(setup)
    response = api.post(
        "/api/v1/restore-requests/",
        {
            "backup": backup.pk,
            "target_agent": scenario.HOSTNAME,
            "target_location": str(tmp_path / "restored"),
            "paths": [f"{setup.source}/no-such-file"],
        },
        format="json",
    )
    assert response.status_code == 400
    assert "no-such-file" in str(response.json())


def test_one_table_of_a_postgresql_backup_restores_into_a_scratch_database(agent_cli, tmp_path):
    database = f"e2e_rt_{uuid.uuid4().hex[:8]}"
    scratch = f"e2e_rt_{uuid.uuid4().hex[:8]}"
    psql(f"CREATE DATABASE {database}")
    try:
        psql(
            "CREATE TABLE orders (id int primary key, item text);"
            "INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 700) g;"
            "CREATE TABLE customers (id int primary key, name text);"
            "INSERT INTO customers SELECT g, 'name ' || g FROM generate_series(1, 40) g;",
            database,
        )
        setup, backup = backed_up(
            agent_cli,
            tmp_path,
            plugin=Plugin.POSTGRESQL,
            options={"database": database, "host": "127.0.0.1", "user": "postgres"},
        )
        assert backup.has_file_list and backup.index_kind == "postgresql"
        _, api = owner_of(setup)
        tables = api.get(f"/api/v1/backups/{backup.pk}/files/", {"path": "/public"}).json()["results"]
        assert {(t["name"], t["rows"]) for t in tables} == {("orders", 700), ("customers", 40)}

        job = restore(api, agent_cli, backup, scratch, ["/public/orders"])
        assert job.state == JobState.SUCCEEDED, (job.error_message, job.log_tail)
        assert psql("SELECT count(*), max(item) FROM orders", scratch).strip() == "700|item 99"
        present = psql("SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname='public'", scratch)
        assert present.strip() == "orders"
    finally:
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        psql(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")


def test_in_a_browser_an_owner_picks_files_from_a_real_backup_and_gets_them_back(
    agent_cli, tmp_path, browser, live_server, screenshot
):
    source = tmp_path / "source"
    (source / "invoices").mkdir(parents=True)
    (source / "invoices" / "invoice-2026-10.pdf").write_bytes(os.urandom(40_000))
    (source / "invoices" / "invoice-2026-11.pdf").write_bytes(os.urandom(30_000))
    setup, backup = backed_up(agent_cli, tmp_path)
    owner, _ = owner_of(setup)
    folder = f"{setup.source}/invoices"

    page = browser.new_page(viewport={"width": 1300, "height": 900})
    log_in(page, live_server.url, owner.username)
    page.goto(f"{live_server.url}/clients/{setup.client.pk}/backups/{backup.pk}/files/?path={folder}")
    assert page.locator("nav.path-crumbs a").all_inner_texts()[-1] == "source"
    assert "invoice-2026-11.pdf" in page.inner_text("table")
    page.check(f"input[value='{folder}/invoice-2026-10.pdf']")
    screenshot(page, "e2e-file-browser")
    page.click("text=Restore selected…")
    page.fill("#id_target_location", str(tmp_path / "restored"))
    screenshot(page, "e2e-restore-form")
    page.click("text=Request the restore")
    page.wait_for_load_state("networkidle")

    request = RestoreRequest.objects.get()
    assert request.paths == [f"{folder}/invoice-2026-10.pdf"] and request.job_id
    assert agent_cli.run_once().returncode == 0
    assert Job.objects.get(pk=request.job_id).state == JobState.SUCCEEDED
    restored = tmp_path / "restored" / folder.lstrip("/")
    assert [p.name for p in restored.iterdir()] == ["invoice-2026-10.pdf"]
    original = (source / "invoices" / "invoice-2026-10.pdf").read_bytes()
    assert (restored / "invoice-2026-10.pdf").read_bytes() == original
