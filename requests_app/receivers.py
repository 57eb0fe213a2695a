"""Reactions to what the catalog announces. Thin: each calls one service function."""

from __future__ import annotations

from catalog.choices import JobKind
from catalog.models import Agent, Job
from catalog.signals import agent_enrolled, job_changed
from requests_app import services
from requests_app.webhooks import receivers as webhooks


def on_job_changed(sender, *, job_id: int, previous_state: str, state: str, **kwargs) -> None:
    if Job.objects.filter(pk=job_id, kind=JobKind.RESTORE).exists():
        services.follow_job(job_id)


def on_agent_enrolled(sender, *, agent_id: int, client_ids: list[int], **kwargs) -> None:
    hostname = Agent.objects.filter(pk=agent_id).values_list("hostname", flat=True).first() or ""
    services.mark_provisioned(client_ids, hostname)


def connect() -> None:
    job_changed.connect(on_job_changed, dispatch_uid="requests_app.follow_job")
    agent_enrolled.connect(on_agent_enrolled, dispatch_uid="requests_app.mark_provisioned")
    webhooks.connect()
