"""Many pollers for one agent at once: every queued job is handed out exactly once.

Runs on both databases: PostgreSQL uses SELECT … FOR UPDATE SKIP LOCKED, SQLite
serialises writers with BEGIN IMMEDIATE. Real threads, real connections.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from catalog.choices import JobState
from catalog.models import Job
from catalog.services import jobs
from tests import factories

THREADS = 12
JOBS = 40


@pytest.mark.django_db(transaction=True)
def test_concurrent_polls_claim_every_job_exactly_once():
    first = factories.JobFactory()
    agent = first.agent
    for _ in range(JOBS - 1):  # one open backup per client: the agent's other clients
        factories.JobFactory(client=factories.BackupClientFactory(agent=agent))
    barrier = threading.Barrier(THREADS)
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def poller() -> None:
        try:
            barrier.wait()
            while True:
                batch = jobs.claim(agent, limit=3)
                with lock:
                    claimed.extend(job.pk for job in batch)
                if not batch and not Job.objects.filter(agent=agent, state=JobState.QUEUED).exists():
                    return
        except BaseException as exc:  # surfaced below: a thread must not fail silently
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=poller) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert len(claimed) == JOBS
    assert len(set(claimed)) == JOBS
    assert Job.objects.filter(state=JobState.RUNNING).count() == JOBS
