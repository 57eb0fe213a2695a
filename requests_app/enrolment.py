"""The one command a requester pastes on the new server: enrol, with the allow-list the client needs.

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


def enrol_command(request: ClientRequest, token: str) -> str:
    storage = request.policy.storage_target
    # Only a filesystem target is a path on the server; object storage needs no path allowed.
    mounted_root = storage.location if storage.kind == StorageKind.FILESYSTEM else ""
    argv = [
        "backup-agent",
        "enrol",
        "--server",
        settings.PORTAL_BASE_URL,
        "--token",
        token,
        "--hostname",
        request.hostname,
        *enrol_flags(request.plugin, request.options, mounted_root),
    ]
    return shlex.join(argv)
