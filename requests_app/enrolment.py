"""The one command a requester pastes on the new server: install and enrol, with the client's allow-list.

The agent refuses whatever its server's administrator did not allow; putting
the requested client's paths, database or program and its storage into the
enrol command keeps the common case one paste. Every argument is quoted: the
paths come from the requester.
"""

from __future__ import annotations

import shlex

from django.conf import settings

from catalog.allow_list import enrol_flags
from catalog.choices import StorageKind
from requests_app.models import ClientRequest


def enrol_arguments(request: ClientRequest, token: str) -> list[str]:
    """What follows `backup-agent enrol --server URL`: the token, the host and the allow-list flags."""
    storage = request.policy.storage_target
    # Only a filesystem target is a path on the server; object storage needs no path allowed.
    mounted_root = storage.location if storage.kind == StorageKind.FILESYSTEM else ""
    return [
        "--token",
        token,
        "--hostname",
        request.hostname,
        *enrol_flags(request.plugin, request.options, mounted_root),
    ]


def enrol_command(request: ClientRequest, token: str) -> str:
    """For a server that has the agent already (the .deb, pip, the manual route)."""
    argv = ["backup-agent", "enrol", "--server", settings.PORTAL_BASE_URL, *enrol_arguments(request, token)]
    return shlex.join(argv)


def install_command(request: ClientRequest, token: str) -> str:
    """The one paste: the portal's install.sh downloads, verifies, enrols with these flags, starts."""
    script = shlex.quote(f"{settings.PORTAL_BASE_URL}/agent/install.sh")
    return f"curl -fsSL {script} | sudo sh -s -- {shlex.join(enrol_arguments(request, token))}"


def manual_steps(request: ClientRequest, token: str, pyz_sha256: str) -> str:
    """The same without curl or systemd: fetch the zipapp any way, check it, install it, enrol."""
    base = settings.PORTAL_BASE_URL
    lines = [
        f"wget {shlex.quote(base + '/agent/backup-agent.pyz')}    # or curl -fsSLO, or copy it over",
        f"echo '{pyz_sha256}  backup-agent.pyz' | sha256sum -c -",
        "sudo install -D -m 0755 backup-agent.pyz /usr/local/lib/backup-agent/backup-agent.pyz",
        "sudo ln -sf ../lib/backup-agent/backup-agent.pyz /usr/local/bin/backup-agent",
        f"sudo {enrol_command(request, token)}",
    ]
    return "\n".join(lines)
