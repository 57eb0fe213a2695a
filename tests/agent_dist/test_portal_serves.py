"""GET /agent/…: the zipapp and its published SHA-256, the .deb, install.sh; the request page and the API."""

from __future__ import annotations

import hashlib
import html
import json
import subprocess

import pytest
from django.urls import reverse

import backup_agent
from agent_dist import artifacts, build
from catalog.choices import Plugin
from requests_app import services
from requests_app.actors import Actor
from requests_app.choices import Channel
from tests.agent_dist.conftest import require

VERSION = backup_agent.__version__


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_the_served_zipapp_matches_its_published_sha256(client):
    pyz = client.get("/agent/backup-agent.pyz")
    assert pyz.status_code == 200 and pyz["Content-Type"] == "application/zip"
    data = body_of(pyz)
    assert data.startswith(b"#!/usr/bin/env python3\n")
    digest = hashlib.sha256(data).hexdigest()
    assert pyz["X-Checksum-SHA256"] == digest and pyz["X-Agent-Version"] == VERSION
    published = client.get("/agent/backup-agent.pyz.sha256")
    assert published.content.decode() == f"{digest}  backup-agent.pyz\n"
    # The same bytes as a build of the portal's own backup_agent/: one source, one checksum.
    assert digest == hashlib.sha256(build.zipapp_bytes()).hexdigest()
    assert f"PYZ_SHA256={digest}\n" in client.get("/agent/install.sh").content.decode()


def test_the_downloads_need_no_sign_in_and_only_get(client):
    for url in ("/agent/install.sh", "/agent/backup-agent.pyz", "/agent/backup-agent.pyz.sha256"):
        assert client.get(url).status_code == 200, url
        assert client.post(url).status_code == 405, url


def test_a_stale_zipapp_is_rebuilt(client, agent_dist_dir, monkeypatch):
    first = artifacts.zipapp()
    manifest = json.loads((agent_dist_dir / "manifest.json").read_text())
    assert manifest["source"] == build.source_digest() and manifest["pyz_sha256"] == first.sha256
    # Another release's source: the manifest no longer matches, so the next request rebuilds.
    manifest["source"] = "0" * 64
    manifest["pyz_sha256"] = "stale"
    (agent_dist_dir / "manifest.json").write_text(json.dumps(manifest))
    (agent_dist_dir / "backup-agent.pyz").write_bytes(b"an older agent")
    again = client.get("/agent/backup-agent.pyz.sha256").content.decode()
    assert again == f"{first.sha256}  backup-agent.pyz\n"
    assert build.sha256_of(agent_dist_dir / "backup-agent.pyz") == first.sha256


def test_the_deb_is_served_under_its_versioned_name(client):
    require("dpkg-deb")
    latest = client.get("/agent/backup-agent.deb")
    assert latest.status_code == 302 and latest["Location"] == f"/agent/backup-agent_{VERSION}_all.deb"
    deb = client.get(latest["Location"])
    assert deb.status_code == 200 and deb["Content-Type"] == "application/vnd.debian.binary-package"
    assert body_of(deb).startswith(b"!<arch>\ndebian-binary")
    assert client.get("/agent/backup-agent_0.0.1_all.deb").status_code == 404


def test_install_sh_passes_shellcheck_and_names_this_portal(client, settings, tmp_path):
    settings.PORTAL_BASE_URL = "https://backup.example.com"
    script = client.get("/agent/install.sh")
    assert script.status_code == 200 and script["Content-Type"].startswith("text/x-shellscript")
    text = script.content.decode()
    assert text.startswith("#!/bin/sh\n") and "set -eu\n" in text
    assert "PORTAL=https://backup.example.com\n" in text
    assert f"AGENT_VERSION={VERSION}\n" in text
    assert "ExecStart=/usr/local/bin/backup-agent run" in text  # the unit, embedded
    assert "RestartForceExitStatus=75\n" in text and "SuccessExitStatus=75\n" in text
    assert text.rstrip().endswith('\nmain "$@"')  # one function: a truncated download runs nothing
    path = tmp_path / "install.sh"
    path.write_text(text)
    checked = subprocess.run([require("shellcheck"), "-s", "sh", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    subprocess.run(["dash", "-n", str(path)], check=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://backup.example.com/'; rm -rf /; '",
        # `$` in a regex matches before a final newline: a newline ends install.sh's comment lines.
        "https://backup.example.com\n",
        "https://backup.example.com\nrm -rf /\n",
    ],
)
def test_install_sh_refuses_an_unsafe_base_url(client, settings, caplog, url):
    settings.PORTAL_BASE_URL = url
    served = client.get("/agent/install.sh")
    assert served.status_code == 500 and b"#!/bin/sh" not in served.content
    assert b"configuration is invalid" in served.content
    assert "install.sh is not served: PORTAL_BASE_URL" in caplog.text and "not a plain http" in caplog.text


def test_install_sh_refuses_a_version_or_sha256_leaving_its_quotes(client, settings, monkeypatch, caplog):
    settings.PORTAL_BASE_URL = "https://backup.example.com"
    app = artifacts.zipapp()
    for version, sha256 in (("4.0.0'\nrm -rf /", app.sha256), (app.version, app.sha256 + "\n")):
        monkeypatch.setattr(artifacts, "zipapp", lambda v=version, s=sha256: artifacts.Zipapp(app.path, s, v))
        served = client.get("/agent/install.sh")
        assert served.status_code == 500 and b"#!/bin/sh" not in served.content
    assert "cannot go into install.sh" in caplog.text


def test_the_whole_deb_has_a_published_sha256(client):
    require("dpkg-deb")
    deb = body_of(client.get(f"/agent/backup-agent_{VERSION}_all.deb"))
    published = client.get("/agent/backup-agent.deb.sha256")
    assert published.status_code == 200
    expected = f"{hashlib.sha256(deb).hexdigest()}  backup-agent_{VERSION}_all.deb\n"
    assert published.content.decode() == expected


def client_request(owner, app, policy):
    return services.submit_client(
        actor=Actor.person(owner, Channel.WEB),
        application=app,
        hostname="new01.example.com",
        name="new-files",
        plugin=Plugin.FILES,
        options={"paths": ["/srv/new data"]},
        policy=policy,
    )


@pytest.mark.django_db
def test_the_approved_request_page_shows_the_one_paste_with_the_token(client, owner, app, auto_policy):
    request = client_request(owner, app, auto_policy)
    client.force_login(owner)
    response = client.post(reverse("requests:issue-enrolment", args=[request.pk]))
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    command = response.context["install_command"]
    token = response.context["enrol_command"].split("--token ")[1].split()[0]
    root = request.policy.storage_target.location
    assert command == (
        "curl -fsSL http://127.0.0.1:8000/agent/install.sh | sudo sh -s -- "
        f"--token {token} --hostname new01.example.com --allow-path '/srv/new data' --allow-storage {root}"
    )
    page = html.unescape(response.content.decode())
    assert command in page and 'data-copy="#install-command"' in page
    assert "portal/copy.js" in page
    # The manual route beside it: the zipapp, its checksum, the same enrol command.
    sha = artifacts.zipapp().sha256
    assert f"echo '{sha}  backup-agent.pyz' | sha256sum -c -" in page
    assert f"sudo {response.context['enrol_command']}" in page
    assert "/agent/backup-agent.pyz" in page
    # Shown this once.
    assert token not in client.get(request.get_absolute_url()).content.decode()


@pytest.mark.django_db
def test_the_owner_of_another_application_gets_404(client, owner, other_owner, app, auto_policy):
    request = client_request(owner, app, auto_policy)
    client.force_login(other_owner)
    assert client.get(request.get_absolute_url()).status_code == 404
    assert client.post(reverse("requests:issue-enrolment", args=[request.pk])).status_code == 404


@pytest.mark.django_db
def test_the_api_gives_the_install_command_with_the_enrol_command(owner, app, auto_policy):
    from rest_framework.test import APIClient

    request = client_request(owner, app, auto_policy)
    api = APIClient()
    api.force_authenticate(owner)
    response = api.post(f"/api/v1/client-requests/{request.pk}/enrolment-token/")
    assert response.status_code == 201, response.content
    data = response.json()
    prefix = "curl -fsSL http://127.0.0.1:8000/agent/install.sh | sudo sh -s -- "
    enrol_prefix = "backup-agent enrol --server http://127.0.0.1:8000 "
    assert data["install_command"] == prefix + data["enrol_command"].removeprefix(enrol_prefix)
    assert f"--token {data['token']} " in data["install_command"]
