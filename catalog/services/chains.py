"""Chains of recovery points: which level a backup takes, and what a point needs to be restored.

A full holds the whole tree; an incremental what changed since its base, the point before it
(docs/incremental.md). Restoring a point needs its chain: its full and every incremental
between them, available and not failed verification (``BackupQuerySet.restorable``, the one
rule: it decides, this module only names the culprit for people).

Chains stay linear: a backup builds only on the newest point of its client, and only when
that point is available, restorable and has a file list. So a point has at most one
dependent, and the points of a chain in time order are exactly its bases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Exists, F, Func, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from catalog.choices import BackupLevel, BackupStatus, JobKind, Plugin, Verification
from catalog.errors import InvalidReport
from catalog.models import MAX_CHAIN_LENGTH, Agent, Backup, Job, ProtectionPolicy

#: Job.level_reason's length.
REASON_LENGTH = 300


@dataclass(frozen=True)
class Plan:
    """What a backup job takes: a full, or an incremental on ``base``; ``reason`` says why a full
    where the policy takes incrementals ("" otherwise)."""

    level: str
    base: Backup | None = None
    reason: str = ""


FULL = Plan(BackupLevel.FULL)


def _full(reason: str) -> Plan:
    return Plan(BackupLevel.FULL, reason=reason[:REASON_LENGTH])


# --- Planning a backup's level (at claim time) ------------------------------------------------


def plan_level(job: Job, agent: Agent, *, now: datetime | None = None) -> Plan:
    """The level ``job`` (a backup being claimed by ``agent``) takes, its base, and why a full.

    Called inside the claim's transaction: the base is the client's newest point, read with
    its row locked (``select_for_update``). Retention locks a point before expiring it and
    never expires one an open backup job builds on (``retention.expire_due``), so either this
    read sees the point available and it stays so until the job's report, or it sees it
    expired (having waited for the sweep's commit) and the job takes a full. One query;
    a few more only to name what breaks a chain.
    """
    client, policy = job.client, job.client.policy
    if not policy.takes_incrementals:
        return FULL
    if client.plugin != Plugin.FILES:
        return _full(f"{client.plugin} backups are always full: only files backups take incrementals")
    if not agent.restores_chains:
        return _full(
            f"the agent on {agent.hostname} speaks protocol {agent.protocol}; incrementals need "
            f"protocol {Agent.INCREMENTAL_PROTOCOL} (upgrade the agent)"
        )
    newest = _newest_point_locked(client.pk)
    if newest is None:
        return _full("no earlier backup")
    reason = _unfit_base(newest, policy) or _full_due(newest, policy, now or timezone.now())
    if reason:
        return _full(reason)
    return Plan(BackupLevel.INCREMENTAL, base=newest)


def _newest_point_locked(client_id: int) -> Backup | None:
    """The client's newest point, locked, with ``chain_whole`` and ``chain_points`` (its place in its chain).

    Its own status and verification are read from the locked row (fresh once the lock is
    granted); ``chain_whole`` asks ``restorable()`` about the rest of its chain, which retention
    cannot touch meanwhile: every base has an available dependent, this point.
    """
    in_chain = Backup.objects.filter(
        full_id=Coalesce(OuterRef("full_id"), OuterRef("pk")), taken_at__lte=OuterRef("taken_at")
    )
    counted = in_chain.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n")[:1]
    return (
        # NO KEY: blocks the sweep's lock and update, not the foreign keys of rows naming the point.
        Backup.objects.select_for_update(of=("self",), no_key=True)
        .select_related("full")
        .filter(client_id=client_id)
        .annotate(
            chain_whole=Exists(Backup.objects.restorable().filter(pk=OuterRef("pk"))),
            chain_points=Coalesce(Subquery(counted), Value(0)) + 1,
        )
        .order_by("-taken_at", "-pk")
        .first()
    )


def _unfit_base(newest: Backup, policy: ProtectionPolicy) -> str:
    """Why the client's newest point cannot be a base ("" if it can)."""
    if newest.status != BackupStatus.AVAILABLE:
        return f"the last backup, {newest.pk}, {_status_words(newest.status)}"
    if newest.verification == Verification.FAILED:
        return f"backup {newest.pk} failed verification"
    if not newest.chain_whole:
        broken = broken_base(newest)
        if broken is not None:
            return f"backup {broken.member.pk}, in the chain of backup {newest.pk}, {broken.why}"
        return f"the chain of backup {newest.pk} is not whole"
    if not newest.has_file_list:
        return f"backup {newest.pk} has no file list to compare with"
    index = newest.manifest.get("index") if isinstance(newest.manifest, dict) else None
    if isinstance(index, dict) and index.get("format") == 1:
        return f"backup {newest.pk}'s file list predates incrementals (format 1)"
    if newest.storage_target_id != policy.storage_target_id:
        return f"the policy's storage target changed since backup {newest.pk}"
    return ""


def _full_due(newest: Backup, policy: ProtectionPolicy, now: datetime) -> str:
    """Why the policy wants a full now ("" if an incremental on ``newest`` is due)."""
    points = newest.chain_points
    if points >= MAX_CHAIN_LENGTH:
        return f"backup {newest.pk}'s chain holds {points} points, the most one chain may hold"
    every = policy.full_every_backups
    if every is not None and points >= every:
        if every == 1:
            return "the policy takes a full every backup"
        return f"the policy's full every {every} backups is due ({points} points since the last full)"
    days = policy.full_every_days
    if days is not None:
        full = newest.full or newest
        taken = full.taken_at.astimezone(UTC).date()
        if (now.astimezone(UTC).date() - taken).days >= days:
            cadence = {1: "daily full", 7: "weekly full"}.get(days, f"full every {days} days")
            return f"the policy's {cadence} is due (the last full, backup {full.pk}, was taken on {taken})"
    return ""


def _status_words(status: str) -> str:
    return {BackupStatus.EXPIRED: "has expired", BackupStatus.DELETED: "has been deleted"}.get(
        status, f"is {status}"
    )


def plan_claimed(jobs: list[Job], agent: Agent, *, now: datetime) -> list[Job]:
    """Plan the level of each backup among ``jobs`` (just claimed); the jobs whose plan is not a plain full.

    ``claim`` has already written ``level`` "full" on every backup it claimed: only those
    returned need another write (an incremental, or a full with a reason).
    """
    changed = []
    for job in jobs:
        if job.kind != JobKind.BACKUP:
            continue
        plan = plan_level(job, agent, now=now)
        job.level, job.base, job.level_reason = plan.level, plan.base, plan.reason
        if plan != FULL:
            changed.append(job)
    return changed


# --- Reports ------------------------------------------------------------------------------


def check_report(job: Job, level: str, base_id: int | None) -> None:
    """A backup report's ``level`` and ``base`` against what ``job`` was planned; InvalidReport if not.

    An incremental is accepted only for a job planned incremental and on exactly its planned
    base; a full always (the agent may take a full instead, and its log says why).
    """
    if level == BackupLevel.FULL:
        if base_id is not None:
            raise InvalidReport("base", 'A full backup has no base: send "base": null or leave it out.')
        return
    if job.level != BackupLevel.INCREMENTAL or job.base_id is None:
        raise InvalidReport(
            "level",
            f"Job {job.pk} was planned as a full backup; an incremental is not accepted for it.",
        )
    if base_id != job.base_id:
        raise InvalidReport(
            "base",
            f"Job {job.pk}'s incremental builds on backup {job.base_id}, the base it was given; "
            f"{'no base' if base_id is None else f'backup {base_id}'} is not accepted.",
        )


# --- Chains -------------------------------------------------------------------------------


def chain_of(backup: Backup, *, lock: bool = False) -> list[Backup]:
    """``backup``'s bases, oldest first (its full first); [] for a full. One query.

    ``lock``: the chain's rows are locked (``select_for_update``) as they are read.
    """
    if backup.full_id is None:
        return []
    return chains_of([backup], lock=lock)[backup.pk]


def chains_of(backups: list[Backup], *, lock: bool = False) -> dict[int, list[Backup]]:
    """Each point's bases, oldest first, by its id: one query for all of them (none for fulls only).

    The rows of the chains are read at once (a chain's points share its ``full``), then each
    point's bases are found by walking ``base`` back to the full.
    """
    chains: dict[int, list[Backup]] = {backup.pk: [] for backup in backups}
    fulls = {backup.full_id for backup in backups if backup.full_id is not None}
    if not fulls:
        return chains
    members = Backup.objects.filter(Q(pk__in=fulls) | Q(full_id__in=fulls))
    if lock:
        members = members.select_for_update()
    rows = {member.pk: member for member in members}
    for backup in backups:
        chain, cursor = [], backup.base_id
        # Bounded: a walk that went on longer than the rows read would be a cycle, which the
        # planning never makes; stop rather than loop.
        while cursor is not None and cursor in rows and len(chain) <= len(rows):
            chain.append(rows[cursor])
            cursor = rows[cursor].base_id
        chains[backup.pk] = chain[::-1]
    return chains


@dataclass(frozen=True)
class Unrestorable:
    """Why a point cannot be restored: ``member`` (the point itself, or one of its bases) ``why``."""

    member: Backup
    why: str  # "has expired", "has been deleted", "failed verification"


def why_unrestorable(backup: Backup) -> Unrestorable | None:
    """None if ``backup`` is restorable (``restorable()`` decides); else the oldest member of its
    chain that is not (its bases come first, then the point itself) and what is wrong with it."""
    members = [*chain_of(backup), backup]
    restorable = set(
        Backup.objects.restorable().filter(pk__in=[m.pk for m in members]).values_list("pk", flat=True)
    )
    if backup.pk in restorable:
        return None
    for member in members:
        if member.pk not in restorable and (
            member.status != BackupStatus.AVAILABLE or member.verification == Verification.FAILED
        ):
            return Unrestorable(member, _member_words(member.status, member.verification))
    return Unrestorable(backup, "is not restorable (its chain is not whole)")


def broken_base(backup: Backup) -> Unrestorable | None:
    """The base that keeps ``backup`` from being restored (None for a full, a whole chain, or when
    the culprit is the point itself: that is each caller's own rule)."""
    if backup.full_id is None:
        return None
    broken = why_unrestorable(backup)
    return broken if broken is not None and broken.member.pk != backup.pk else None


def _member_words(status: str, verification: str) -> str:
    """What is wrong with a chain member, in the words every page uses."""
    if status != BackupStatus.AVAILABLE:
        return _status_words(status)
    if verification == Verification.FAILED:
        return "failed verification"
    return "is not restorable"


def newest_restorable(client_id: int, *, full_only: bool = False) -> Backup | None:
    """The client's newest restorable point (only fulls with ``full_only``: for an agent that cannot
    restore an incremental)."""
    points = Backup.objects.restorable().filter(client_id=client_id)
    if full_only:
        points = points.filter(level=BackupLevel.FULL)
    return points.order_by("-taken_at", "-pk").first()


def restore_refusal(backup: Backup, agent: Agent) -> str:
    """Why the catalog will not restore (or test) ``backup`` on ``agent``: a base that breaks its chain,
    or an incremental for an agent too old for chains; "" when it may.

    The point's own state is the caller's rule (a restore refuses a damaged point, a restore
    test may try it again); its bases are not: without them nothing can be rebuilt.
    """
    if backup.level == BackupLevel.INCREMENTAL and not agent.restores_chains:
        return (
            f"Backup {backup.pk} is an incremental and the agent on {agent.hostname} is too old to "
            f"restore one (protocol {agent.protocol}; {Agent.INCREMENTAL_PROTOCOL} needed)."
        )
    broken = broken_base(backup)
    if broken is not None:
        return (
            f"Backup {backup.pk} cannot be restored: backup {broken.member.pk}, in its chain, {broken.why}."
        )
    return ""


def restorable_bases():
    """A filter for points whose bases are all restorable (a full has none): a restore test may try them."""
    return Q(base__isnull=True) | Q(base__in=Backup.objects.restorable())


# --- Many points at once (reports) ---------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """The member that makes a point's chain unrestorable, and why."""

    backup_id: int
    status: str
    verification: str

    @property
    def why(self) -> str:
        """ "backup 41 failed verification", "backup 41 has expired"."""
        return f"backup {self.backup_id} {_member_words(self.status, self.verification)}"

    @property
    def reason(self) -> str:
        return f"chain broken: {self.why}"


@dataclass(frozen=True)
class Point:
    """Enough of a recovery point to find its chain: id, its full (None for a full) and when taken."""

    pk: int
    full_id: int | None
    taken_at: datetime


def first_breaks(points: Iterable[Point]) -> dict[int, Break]:
    """For points outside ``restorable()``: the oldest member of each one's chain (itself included)
    that ``restorable()`` refuses — the first bad member, as every point before it is restorable.

    One query for any number of points (their chains' unrestorable members, at most 250 each).
    """
    points = list(points)
    if not points:
        return {}
    roots = {p.full_id or p.pk for p in points}
    chains = Q(pk__in=roots) | Q(full_id__in=roots)
    bad = (
        Backup.objects.filter(chains)
        .exclude(pk__in=Backup.objects.restorable().filter(chains).values("pk"))
        .order_by("taken_at", "pk")
        .values_list("pk", "full_id", "taken_at", "status", "verification")
    )
    by_root: dict[int, list[tuple]] = {}
    for row in bad:
        by_root.setdefault(row[1] or row[0], []).append(row)
    breaks = {}
    for point in points:
        for pk, _, taken_at, status, verification in by_root.get(point.full_id or point.pk, []):
            if taken_at <= point.taken_at:
                breaks[point.pk] = Break(pk, status, verification)
                break
    return breaks
