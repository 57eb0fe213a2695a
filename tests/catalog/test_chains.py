"""Issue #15: which level a backup takes, what the agent is sent, and what its report records.

The level is planned when the agent claims the job (``catalog.services.chains.plan_level``),
so the tests claim through ``jobs.claim`` or the agent's own poll, and report through the
agent's ``complete``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.choices import BackupLevel, BackupStatus, JobKind, JobState, Plugin, Verification
from catalog.errors import InvalidReport, LeaseLost
from catalog.models import Agent, Backup, Job
from catalog.services import chains, jobs
from tests import factories
from tests.helpers import agent_client

SHA = hashlib.sha256(b"data").hexdigest()
POLL = "/api/agent/v1/poll"


def claim(job: Job, *, now: datetime | None = None) -> Job:
    """Claim ``job`` as its agent would, and return it as planned."""
    claimed = jobs.claim(job.agent, now=now)
    assert [c.pk for c in claimed] == [job.pk]
    job.refresh_from_db()
    return job


def queued(client, **fields) -> Job:
    return factories.JobFactory(client=client, **fields)


@pytest.fixture
def client(db):
    """A files client on a full-every-7-backups policy, on a protocol-4 agent."""
    return factories.incremental_client()


# --- Planning: when a backup is a full, and why --------------------------------------------


def test_an_existing_policy_takes_fulls_and_gives_no_reason(db):
    client = factories.BackupClientFactory(agent=factories.AgentFactory(protocol=4))
    factories.build_chain(client, 1)
    job = claim(queued(client))
    assert (job.level, job.base, job.level_reason) == (BackupLevel.FULL, None, "")


def test_the_newest_point_of_a_whole_chain_becomes_the_base(client):
    full, first = factories.build_chain(client, 2)
    job = claim(queued(client))
    assert (job.level, job.base, job.level_reason) == (BackupLevel.INCREMENTAL, first, "")
    assert full.pk != first.pk


def test_the_first_backup_is_a_full_because_there_is_no_earlier_one(client):
    job = claim(queued(client))
    assert (job.level, job.base, job.level_reason) == (BackupLevel.FULL, None, "no earlier backup")


@pytest.mark.parametrize("plugin", [Plugin.POSTGRESQL, Plugin.MYSQL, Plugin.COMMAND])
def test_database_dumps_and_commands_stay_full_and_say_so(db, plugin):
    client = factories.incremental_client(plugin=plugin, options={})
    factories.build_chain(client, 1)
    job = claim(queued(client))
    assert (job.level, job.base) == (BackupLevel.FULL, None)
    assert job.level_reason == f"{plugin} backups are always full: only files backups take incrementals"


def test_an_agent_older_than_protocol_4_takes_fulls(db):
    old = factories.AgentFactory(protocol=3, hostname="old.example.com")
    client = factories.incremental_client(agent=old)
    factories.build_chain(client, 1)
    job = claim(queued(client))
    assert job.level == BackupLevel.FULL
    assert "old.example.com speaks protocol 3; incrementals need protocol 4" in job.level_reason


def test_a_point_that_failed_verification_forces_a_full(client):
    _, first = factories.build_chain(client, 2)
    Backup.objects.filter(pk=first.pk).update(verification=Verification.FAILED)
    job = claim(queued(client))
    assert (job.level, job.base, job.level_reason) == (
        BackupLevel.FULL,
        None,
        f"backup {first.pk} failed verification",
    )


def test_a_damaged_base_further_back_forces_a_full_naming_it(client):
    full, _, second = factories.build_chain(client, 3)
    Backup.objects.filter(pk=full.pk).update(verification=Verification.FAILED)
    job = claim(queued(client))
    assert job.level == BackupLevel.FULL
    assert job.level_reason == f"backup {full.pk}, in the chain of backup {second.pk}, failed verification"


def test_an_expired_newest_point_forces_a_full_rather_than_branch_an_older_chain(client):
    full, first = factories.build_chain(client, 2)
    Backup.objects.filter(pk=first.pk).update(status=BackupStatus.EXPIRED)
    job = claim(queued(client))
    assert (job.level, job.level_reason) == (BackupLevel.FULL, f"the last backup, {first.pk}, has expired")
    assert full.dependents.count() == 1  # never a second branch on the full


def test_a_point_without_a_file_list_forces_a_full(client):
    no_file_list = {"index_entries": None, "index_kind": "", "index_size_bytes": None, "index_sha256": ""}
    factories.build_chain(client, 1, **no_file_list)
    job = claim(queued(client))
    assert job.level == BackupLevel.FULL
    assert "has no file list" in job.level_reason


def test_a_file_list_of_format_1_forces_a_full(client):
    (full,) = factories.build_chain(client, 1, manifest={"index": {"format": 1, "kind": "files"}})
    job = claim(queued(client))
    assert job.level_reason == f"backup {full.pk}'s file list predates incrementals (format 1)"


def test_a_new_storage_target_starts_a_new_chain(client):
    (full,) = factories.build_chain(client, 1)
    client.policy.storage_target = factories.StorageTargetFactory()
    client.policy.save()
    job = claim(queued(client))
    assert job.level_reason == f"the policy's storage target changed since backup {full.pk}"


def test_a_full_every_n_backups_comes_when_the_chain_holds_n_points(db):
    client = factories.incremental_client(policy=factories.incremental_policy(full_every_backups=3))
    factories.build_chain(client, 2)
    assert claim(queued(client)).level == BackupLevel.INCREMENTAL
    Job.objects.filter(client=client, state=JobState.RUNNING).update(state=JobState.CANCELLED)

    factories.build_chain(client, 3)  # a newer chain, three points long
    job = claim(queued(client))
    assert (job.level, job.level_reason) == (
        BackupLevel.FULL,
        "the policy's full every 3 backups is due (3 points since the last full)",
    )


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("full_taken", "now", "level"),
    [
        # Calendar days (UTC dates): a full late on the 1st is 7 days old early on the 8th.
        (utc(2026, 3, 1, 23, 50), utc(2026, 3, 8, 0, 10), BackupLevel.FULL),
        (utc(2026, 3, 1, 0, 10), utc(2026, 3, 7, 23, 50), BackupLevel.INCREMENTAL),
    ],
)
def test_a_weekly_full_is_due_seven_calendar_days_after_the_last(db, full_taken, now, level):
    client = factories.incremental_client(
        policy=factories.incremental_policy(full_every_backups=None, full_every_days=7)
    )
    full, _ = factories.build_chain(client, 2, start=full_taken, every=timedelta(hours=12))
    job = claim(queued(client, not_before=now - timedelta(minutes=1)), now=now)
    assert job.level == level
    if level == BackupLevel.FULL:
        assert job.level_reason == (
            f"the policy's weekly full is due (the last full, backup {full.pk}, was taken on 2026-03-01)"
        )


def test_no_chain_grows_past_the_longest_a_chain_may_be(client, monkeypatch):
    monkeypatch.setattr(chains, "MAX_CHAIN_LENGTH", 3)
    client.policy.full_every_backups, client.policy.full_every_days = None, 365
    client.policy.save()
    *_, last = factories.build_chain(client, 3)
    job = claim(queued(client))
    assert job.level_reason == f"backup {last.pk}'s chain holds 3 points, the most one chain may hold"


def test_a_reason_never_overflows_its_column(client):
    client.agent.hostname = "a" * 60 + ".example.com"
    client.agent.protocol = 1
    client.agent.save()
    assert len(claim(queued(client)).level_reason) <= chains.REASON_LENGTH


# --- What the agent is sent ------------------------------------------------------------------


def poll(agent: Agent, protocol: int = 4) -> list[dict]:
    api, _ = agent_client(agent)
    response = api.post(POLL, {"version": "0.4.0", "protocol": protocol, "plugins": ["files"]}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["jobs"]


def test_an_incremental_job_carries_its_base(client):
    full, first = factories.build_chain(client, 2, manifest={"facts": {"members": 3}})
    job = queued(client)
    (payload,) = poll(client.agent)
    assert payload["id"] == job.pk
    assert (payload["level"], payload["level_reason"]) == ("incremental", "")
    assert payload["base"] == {
        "id": first.pk,
        "location": first.location,
        "sha256": first.sha256,
        "size": first.size_bytes,
        "stored_size": first.stored_size_bytes,
        "compression": first.compression,
        "manifest": {"facts": {"members": 3}},
        "level": "incremental",
        "index": {"sha256": first.index_sha256, "size": first.index_size_bytes},
    }
    assert full.pk != first.pk


def test_a_full_job_says_why_and_has_no_base(client):
    queued(client)
    (payload,) = poll(client.agent)
    assert (payload["level"], payload["level_reason"], payload["base"]) == ("full", "no earlier backup", None)


def test_a_restore_of_an_incremental_carries_its_chain_oldest_first(client):
    full, first, second = factories.build_chain(client, 3)
    jobs.queue_restore(second, agent=client.agent, target_location="/restore", overwrite=False)
    (payload,) = poll(client.agent)
    assert payload["backup"]["id"] == second.pk
    assert payload["backup"]["level"] == "incremental"
    assert payload["backup"]["index"] == {"sha256": second.index_sha256, "size": 4567}
    assert [member["id"] for member in payload["chain"]] == [full.pk, first.pk]
    assert [member["level"] for member in payload["chain"]] == ["full", "incremental"]
    assert "chain" not in payload["chain"][0]
    assert "level" not in payload  # a restore has no level of its own


def test_a_restore_of_a_full_has_an_empty_chain_and_a_point_without_a_file_list_no_index(db):
    estate = factories.build_estate(factories.ApplicationFactory())
    factories.JobFactory(kind=JobKind.RESTORE_TEST, client=estate.client, backup=estate.backup)
    (payload,) = poll(estate.agent)
    assert payload["chain"] == []
    assert (payload["backup"]["level"], payload["backup"]["index"]) == ("full", None)


def test_a_removal_is_sent_without_a_chain(client):
    *_, last = factories.build_chain(client, 2)
    factories.JobFactory(kind=JobKind.EXPIRE, client=client, backup=last)
    (payload,) = poll(client.agent)
    assert payload["kind"] == "expire" and "chain" not in payload


# --- Query counts: a few per claimed backup, none per restore ---------------------------------


def claim_queries(agent: Agent) -> int:
    """The queries of one poll that claims the agent's queued jobs (nothing else to write)."""
    api, _ = agent_client(agent)
    body = {"version": agent.version, "protocol": agent.protocol, "plugins": agent.plugins}
    with CaptureQueriesContext(connection) as captured:
        assert api.post(POLL, body, format="json").json()["jobs"]
    return len(captured)


def steady_agent() -> Agent:
    return factories.AgentFactory(protocol=4, version="0.4.0", plugins=["files"])


def queries_to_claim(count: int, make_job) -> int:
    """The queries of a poll of a fresh agent claiming ``count`` jobs made by ``make_job(agent, policy)``."""
    agent = steady_agent()
    policy = factories.incremental_policy()
    for _ in range(count):
        make_job(agent, policy)
    return claim_queries(agent)


def incremental_backup(agent: Agent, policy) -> None:
    client = factories.incremental_client(agent=agent, policy=policy)
    factories.build_chain(client, 2)
    queued(client)


def plain_backup(agent: Agent, policy) -> None:
    queued(factories.BackupClientFactory(agent=agent))


def restore_of_an_incremental(agent: Agent, policy) -> None:
    client = factories.incremental_client(agent=agent, policy=policy)
    *_, last = factories.build_chain(client, 3)
    jobs.queue_restore(last, agent=agent, target_location="/r", overwrite=False)


def test_claiming_incrementals_costs_one_read_per_backup_and_one_write_in_all(db):
    one, five = queries_to_claim(1, incremental_backup), queries_to_claim(5, incremental_backup)
    assert five - one == 4  # each more backup: the read of its client's newest point, locked
    assert Job.objects.filter(level=BackupLevel.INCREMENTAL).count() == 6
    # Beside a plain claim: that read, and one write of the levels planned.
    assert one - queries_to_claim(1, plain_backup) == 2


def test_claiming_backups_of_policies_without_levels_costs_nothing_more(db):
    assert queries_to_claim(5, plain_backup) == queries_to_claim(1, plain_backup)
    assert set(Job.objects.values_list("level", flat=True)) == {BackupLevel.FULL}


def test_the_chains_of_several_restores_are_read_in_one_query(db):
    assert queries_to_claim(4, restore_of_an_incremental) == queries_to_claim(1, restore_of_an_incremental)
    assert queries_to_claim(1, restore_of_an_incremental) - queries_to_claim(1, plain_backup) == 1


def test_an_idle_poll_of_an_agent_with_chains_is_one_read(client, django_assert_num_queries):
    factories.build_chain(client, 3)
    poll(client.agent)  # the steady state: heartbeat written
    api, _ = agent_client(client.agent)
    body = {"version": "0.4.0", "protocol": 4, "plugins": ["files"]}
    api.post(POLL, body, format="json")
    with django_assert_num_queries(1):
        assert api.post(POLL, body, format="json").json()["jobs"] == []


# --- The report: recorded as taken, refused when it contradicts the plan ------------------------


def report(job: Job, **overrides) -> dict:
    body = {
        "status": "succeeded",
        "size": 4,
        "stored_size": 4,
        "location": jobs.backup_destination(job),
        "sha256": SHA,
        "compression": "none",
        "log_tail": "",
        "protocol": 4,
    }
    body.update(overrides)
    return body


def complete(job: Job, body: dict):
    api, _ = agent_client(job.agent)
    return api.post(f"/api/agent/v1/jobs/{job.pk}/complete", body, format="json")


def test_an_incremental_is_recorded_on_its_base_in_its_fulls_chain(client):
    full, first = factories.build_chain(client, 2)
    job = claim(queued(client))

    response = complete(job, report(job, level="incremental", base=first.pk))

    assert response.status_code == 200, response.content
    backup = Backup.objects.get(job=job)
    assert (backup.level, backup.base, backup.full) == (BackupLevel.INCREMENTAL, first, full)
    assert Backup.objects.restorable().filter(pk=backup.pk).exists()


def test_an_incremental_on_a_full_has_that_full_as_its_full(client):
    (full,) = factories.build_chain(client, 1)
    job = claim(queued(client))
    assert complete(job, report(job, level="incremental", base=full.pk)).status_code == 200
    assert Backup.objects.get(job=job).full == full


def test_a_full_taken_instead_of_the_planned_incremental_is_recorded_as_a_full(client):
    _, first = factories.build_chain(client, 2)
    job = claim(queued(client))
    log = "taking a full backup: index.bpi missing"
    response = complete(job, report(job, level="full", base=None, log_tail=log))
    assert response.status_code == 200, response.content
    backup = Backup.objects.get(job=job)
    assert (backup.level, backup.base, backup.full) == (BackupLevel.FULL, None, None)
    job.refresh_from_db()
    assert f"planned as an incremental on backup {first.pk}; the agent took a full" in job.log_tail


def test_a_report_without_a_level_is_a_full(client):
    factories.build_chain(client, 2)
    job = claim(queued(client))
    assert complete(job, report(job)).status_code == 200
    assert Backup.objects.get(job=job).level == BackupLevel.FULL


@pytest.mark.parametrize(
    ("planned_incremental", "overrides", "field", "words"),
    [
        (False, {"level": "incremental", "base": None}, "level", "was planned as a full backup"),
        (True, {"level": "incremental", "base": 999_999}, "base", "backup 999999 is not accepted"),
        (True, {"level": "incremental"}, "base", "no base is not accepted"),
        (True, {"level": "full", "base": "BASE"}, "base", "A full backup has no base"),
        (True, {"level": "differential"}, "level", "not a valid choice"),
    ],
)
def test_a_report_contradicting_the_plan_is_refused_and_records_nothing(
    db, planned_incremental, overrides, field, words
):
    client = factories.incremental_client()
    if planned_incremental:
        factories.build_chain(client, 2)
    job = claim(queued(client))
    assert (job.level == BackupLevel.INCREMENTAL) is planned_incremental
    if overrides.get("base") == "BASE":
        overrides["base"] = job.base_id

    response = complete(job, report(job, **overrides))

    assert response.status_code == 400, response.content
    assert words in str(response.json()), response.json()
    assert field in str(response.json())
    assert not Backup.objects.filter(job=job).exists()
    job.refresh_from_db()
    assert job.state == JobState.RUNNING


def test_the_service_refuses_an_unplanned_incremental_too(client):
    job = claim(queued(client))
    with pytest.raises(InvalidReport):
        jobs.complete_success(
            job.agent,
            job.pk,
            report=jobs.BackupReport(4, 4, jobs.backup_destination(job), SHA, level="incremental", base=1),
        )
    assert not Backup.objects.filter(job=job).exists()


@pytest.mark.parametrize(("fmt", "recorded"), [(1, True), (2, True), (3, False)])
def test_file_lists_of_format_1_and_2_are_accepted(client, fmt, recorded, monkeypatch):
    from catalog.services import file_lists

    monkeypatch.setattr(file_lists, "place_upload", lambda *args: True)
    job = claim(queued(client))
    index = {"format": fmt, "kind": "files", "entries": 12, "size": 300, "sha256": SHA}
    assert complete(job, report(job, index=index)).status_code == 200
    assert (Backup.objects.get(job=job).index_entries == 12) is recorded


def test_a_late_incremental_whose_base_expired_meanwhile_is_not_recorded(client):
    (full,) = factories.build_chain(client, 1)
    job = claim(queued(client))
    assert job.base == full
    now = timezone.now()
    # Its lease ran out: the job failed and its retry waits; then retention took the base.
    Job.objects.filter(pk=job.pk).update(lease_expires_at=now - timedelta(seconds=1))
    jobs.reap_expired_leases(now=now)
    Backup.objects.filter(pk=full.pk).update(status=BackupStatus.EXPIRED)

    with pytest.raises(LeaseLost, match=f"base, backup {full.pk}, is expired"):
        jobs.complete_success(
            job.agent,
            job.pk,
            report=jobs.BackupReport(
                4, 4, jobs.backup_destination(job), SHA, manifest={"level": "incremental"},
                level="incremental", base=full.pk,
            ),
        )
    assert not Backup.objects.filter(job=job).exists()
    assert Job.objects.get(retry_of=job).state == JobState.QUEUED


# --- Chains read back -----------------------------------------------------------------------


def test_chain_of_walks_the_bases_oldest_first_in_one_query(client, django_assert_num_queries):
    points = factories.build_chain(client, 5)
    factories.build_chain(client, 2)  # another chain of the client, not in the way
    with django_assert_num_queries(1):
        assert chains.chain_of(points[-1]) == points[:-1]
    with django_assert_num_queries(0):
        assert chains.chain_of(points[0]) == []


def test_why_unrestorable_names_the_oldest_broken_member(client):
    full, first, second = factories.build_chain(client, 3)
    assert chains.why_unrestorable(second) is None
    Backup.objects.filter(pk=first.pk).update(verification=Verification.FAILED)
    broken = chains.why_unrestorable(second)
    assert (broken.member, broken.why) == (first, "failed verification")
    assert chains.newest_restorable(client.pk) == full


def test_a_claim_of_three_incrementals_is_three_reads_and_one_write_beyond_the_claim(
    db, django_assert_num_queries
):
    agent = steady_agent()
    policy = factories.incremental_policy()
    for _ in range(3):
        incremental_backup(agent, policy)
    # Savepoint, the locked candidates, the claim's UPDATE, the jobs read back, release: 5;
    # then one locked read of each client's newest point and one UPDATE of the three levels.
    with django_assert_num_queries(5 + 3 + 1) as captured:
        claimed = jobs.claim(agent)
    assert [job.level for job in claimed] == [BackupLevel.INCREMENTAL] * 3
    newest_point_reads = [q for q in captured.captured_queries if 'FROM "catalog_backup"' in q["sql"]]
    assert len(newest_point_reads) == 3
