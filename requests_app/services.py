"""The request workflow: every state transition of a request is one function here.

Each transition locks the request row, checks the from-state, enforces who may
act (four eyes: nobody approves their own request), saves, writes the
AuditEvent in the same transaction, and leaves mail and webhooks to
``transaction.on_commit``. Web views, admin actions, the API and the job
follower all call these functions; none of them sets a status by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.choices import BackupLevel, BackupStatus, ClientStatus, JobState, JobTrigger, Verification
from catalog.errors import InvalidEnrolment, InvalidPath, NoFileList
from catalog.models import Agent, Backup, BackupClient, EnrolmentToken, ProtectionPolicy
from catalog.plugin_options import validate_options, validate_restore_target
from catalog.services import agents, chains, clients, file_lists, hosts, jobs
from catalog.tenancy import is_backup_team
from core.queue import enqueue
from identity import mfa
from requests_app import audit, rules
from requests_app.actors import Actor
from requests_app.choices import ClientAction, RequestStatus
from requests_app.errors import (
    FourEyesViolation,
    InvalidRequest,
    InvalidTransition,
    NotPermitted,
    ReasonRequired,
)
from requests_app.explanations import describe, explain
from requests_app.models import ClientRequest, RestoreRequest

Request = ClientRequest | RestoreRequest


def _changed(request: Request, actor: Actor, action: str, previous: str, *, message: str = "") -> None:
    """Audit a transition and announce it after commit."""
    audit.record(request, actor, action, from_status=previous, to_status=request.status, message=message)
    enqueue("requests_app.tasks.announce", request.kind, request.pk, previous, request.status)


def _lock(model: type[Request], pk: int) -> Request:
    return model.objects.select_for_update().get(pk=pk)


def _expect(request: Request, action: str, *allowed: str) -> None:
    if request.status not in allowed:
        raise InvalidTransition(
            f"{request} is {request.get_status_display().lower()}; it cannot be {action}."
        )


@contextmanager
def _invalid_request() -> Iterator[None]:
    """The catalog's field checks raise ValidationError; callers of the workflow expect InvalidRequest."""
    try:
        yield
    except ValidationError as exc:
        raise InvalidRequest({k: " ".join(v) for k, v in exc.message_dict.items()}) from exc


# --- Submitting -----------------------------------------------------------------------


def submit_restore(
    *,
    actor: Actor,
    backup: Backup,
    target_agent: Agent,
    target_location: str,
    overwrite: bool = False,
    reason: str = "",
    external_ref: str = "",
    paths: list[str] | None = None,
) -> RestoreRequest:
    """Ask for a restore. The caller has already checked the actor may see backup and agent.

    ``paths``: a selective restore's files, folders or tables, as the backup's file list
    shows them; checked and normalised there (duplicates and paths inside another chosen
    folder dropped). Empty or None restores everything. Who must approve does not change.
    """
    if backup.status != BackupStatus.AVAILABLE:
        raise InvalidRequest({"backup": f"This backup is {backup.get_status_display().lower()}."})
    if backup.verification == Verification.FAILED:
        raise InvalidRequest(
            {
                "backup": f"Backup {describe(backup)} is damaged (it failed verification"
                f"{f' on {backup.verified_at:%Y-%m-%d}' if backup.verified_at else ''}) and cannot "
                f"be restored. {_restorable_alternative(backup.client_id)}"
            }
        )
    _check_chain(backup)
    if target_agent.revoked_at:
        raise InvalidRequest({"target_agent": f"{target_agent.hostname} has been revoked."})
    if backup.level == BackupLevel.INCREMENTAL and not target_agent.restores_chains:
        # An older agent cannot rebuild a tree from a chain: never send it one.
        raise InvalidRequest(
            {
                "target_agent": f"The agent on {target_agent.hostname} is too old to restore an incremental "
                f"recovery point (it speaks protocol {target_agent.protocol}; "
                f"{Agent.INCREMENTAL_PROTOCOL} is needed): upgrade it, restore to another server, or "
                f"restore a full point. {_restorable_alternative(backup.client_id, full_only=True)}"
            }
        )
    with _invalid_request():
        validate_restore_target(backup.client.plugin, target_location)
    paths = _selection(backup, target_agent, paths)
    decision = rules.restore_decision(backup=backup, target_agent=target_agent, overwrite=overwrite)
    with transaction.atomic():
        request = RestoreRequest.objects.create(
            backup=backup,
            target_agent=target_agent,
            target_location=target_location,
            overwrite=overwrite,
            reason=reason,
            external_ref=external_ref,
            requester=actor.user,
            api_key=actor.api_key,
            needs_approval=decision.needs_approval,
            approval_rule=decision.reason,
            paths=paths,
        )
        _changed(request, actor, "submitted", "", message=describe_selection(paths))
        if not decision.needs_approval:
            _approve(request, Actor.system(), message=decision.reason)
    return request


def _check_chain(backup: Backup) -> None:
    """An incremental restores only with its whole chain: refused, naming the member that breaks it."""
    broken = chains.broken_base(backup)
    if broken is None:
        return
    raise InvalidRequest(
        {
            "backup": f"Backup {describe(backup)} cannot be restored: it is an incremental, and "
            f"{describe(broken.member)}, in the chain it builds on, {broken.why}. "
            f"{_restorable_alternative(backup.client_id)}"
        }
    )


def _restorable_alternative(client_id: int, *, full_only: bool = False) -> str:
    """Where to turn instead: the client's newest restorable recovery point (only fulls: ``full_only``)."""
    point = chains.newest_restorable(client_id, full_only=full_only)
    kind = "full recovery point" if full_only else "recovery point"
    if point is None:
        return f"This client has no restorable {kind}."
    return f"The newest restorable {kind} is {describe(point)}."


def _selection(backup: Backup, target_agent: Agent, paths: list[str] | None) -> list[str]:
    """A restore's selection, checked against the backup's file list and normalised; [] for everything."""
    if not paths:
        return []
    try:
        paths = file_lists.check_selection(backup, paths)
    except (InvalidPath, NoFileList) as exc:
        raise InvalidRequest({"paths": str(exc)}) from None
    if not target_agent.restores_selections:
        # An older agent ignores the selection and would restore everything: never send it one.
        raise InvalidRequest(
            {
                "paths": f"The agent on {target_agent.hostname} is too old to restore a selection "
                f"(it would restore everything): upgrade it, or restore the whole recovery point."
            }
        )
    return paths


def describe_selection(paths: list[str], *, first: int = 3) -> str:
    """"3 selected: /srv/a, /srv/b, /srv/c" (the first few, then "…"); "" for a whole restore."""
    if not paths:
        return ""
    shown = ", ".join(paths[:first])
    return f"{len(paths)} selected: {shown}{', …' if len(paths) > first else ''}"


def submit_client(
    *,
    actor: Actor,
    application,
    hostname: str,
    name: str,
    plugin: str,
    options: dict,
    policy: ProtectionPolicy,
    justification: str = "",
    external_ref: str = "",
) -> ClientRequest:
    """Ask for a new client. The caller has already checked the actor owns the application."""
    if not rules.may_request_plugin(actor.user, plugin):
        raise NotPermitted(rules.COMMAND_IS_TEAMS)
    with _invalid_request():
        validate_options(plugin, options)
    if BackupClient.objects.filter(application=application, name=name).exists():
        raise InvalidRequest({"name": f"{application.slug} already has a client named {name}."})
    open_request = ClientRequest.objects.filter(
        application=application, name=name, status__in=(RequestStatus.SUBMITTED, RequestStatus.APPROVED)
    )
    if open_request.exists():
        raise InvalidRequest({"name": f"A request for a client named {name} is already open."})
    try:
        return _create_client_request(
            actor,
            application=application,
            hostname=hostname.lower(),
            name=name,
            plugin=plugin,
            options=options,
            policy=policy,
            justification=justification,
            external_ref=external_ref,
        )
    except IntegrityError as exc:
        # Two submissions raced past the check above; clientrequest_one_open_per_name kept one.
        raise InvalidRequest({"name": f"A request for a client named {name} is already open."}) from exc


def _create_client_request(actor: Actor, *, hostname: str, **fields) -> ClientRequest:
    with transaction.atomic():
        # Decided under the host's lock: two owners asking for one new host at once
        # must not both find it free.
        hosts.lock(hostname)
        decision = rules.client_decision(
            policy=fields["policy"],
            plugin=fields["plugin"],
            host_conflict=hosts.conflict(hostname, fields["application"]),
        )
        return _file_client_request(actor, decision, hostname=hostname, **fields)


def _file_client_request(actor: Actor, decision, **fields) -> ClientRequest:
    """Record a protect or retire request as submitted, and approve it at once where the rule says so."""
    request = ClientRequest.objects.create(
        requester=actor.user,
        api_key=actor.api_key,
        needs_approval=decision.needs_approval,
        approval_rule=decision.reason,
        **fields,
    )
    _changed(request, actor, "submitted", "")
    if not decision.needs_approval:
        _approve(request, Actor.system(), message=decision.reason)
    return request


def retire_refusal(client: BackupClient) -> str:
    """Why ``client`` cannot be retired in its state, or "" if it can."""
    if client.status == ClientStatus.PENDING_ENROLMENT:
        return f"{client} is still waiting for its agent: cancel the request that asked for it."
    if client.status not in clients.RETIRABLE:
        return f"{client} is already {client.get_status_display().lower()}."
    return ""


def submit_retire(
    *, actor: Actor, client: BackupClient, justification: str = "", external_ref: str = ""
) -> ClientRequest:
    """Ask to retire a client. The caller has already checked the actor sees the client (its owners).

    Approved like a new client, by the backup team (``rules.retire_decision``); see ``_retire``.
    """
    if why := retire_refusal(client):
        raise InvalidRequest({"client": why})
    if ClientRequest.objects.open().filter(action=ClientAction.RETIRE, client=client).exists():
        raise InvalidRequest({"client": f"A request to retire {client} is already open."})
    decision = rules.retire_decision(client=client)
    try:
        with transaction.atomic():
            request = _file_client_request(
                actor,
                decision,
                action=ClientAction.RETIRE,
                client=client,
                application_id=client.application_id,
                hostname=client.hostname,
                name=client.name,
                plugin=client.plugin,
                options=client.options,
                policy_id=client.policy_id,
                justification=justification,
                external_ref=external_ref,
            )
    except IntegrityError as exc:
        # Two submissions raced past the check above; clientrequest_one_open_retire kept one.
        raise InvalidRequest({"client": f"A request to retire {client} is already open."}) from exc
    return request


# --- Deciding ----------------------------------------------------------------------------


def approve(model: type[Request], pk: int, *, actor: Actor) -> Request:
    """A person of the backup team approves a submitted request (never their own), with MFA."""
    if not actor.is_backup_team:
        raise NotPermitted("Only the backup team approves requests.")
    mfa.require_for_actor(actor, "approving a request")
    with transaction.atomic():
        request = _lock(model, pk)
        _expect(request, "approved", RequestStatus.SUBMITTED)
        if actor.user_id is not None and actor.user_id == request.requester_id:
            raise FourEyesViolation("Nobody approves their own request: another member of the team must.")
        message = ""
        if isinstance(request, ClientRequest) and not request.is_retire:
            hosts.lock(request.hostname)
            # Said now, not at submission: the host may have changed hands since.
            if conflict := hosts.conflict(request.hostname, request.application):
                message = f"{conflict} Approved by the backup team: {request.hostname} is shared."
        _approve(request, actor, message=message)
    return request


def _approve(request: Request, actor: Actor, *, message: str = "") -> None:
    previous = request.status
    request.status = RequestStatus.APPROVED
    request.decided_by = actor.user if actor.user_id else None
    request.decided_at = timezone.now()
    request.save(update_fields=["status", "decided_by", "decided_at", "updated_at"])
    _changed(request, actor, "approved", previous, message=message)
    if isinstance(request, RestoreRequest):
        _start_restore(request)
    elif request.is_retire:
        _retire(request, actor)
    else:
        _provision(request, actor)


def reject(model: type[Request], pk: int, *, actor: Actor, reason: str) -> Request:
    if not actor.is_backup_team:
        raise NotPermitted("Only the backup team rejects requests.")
    mfa.require_for_actor(actor, "rejecting a request")
    if not reason or not reason.strip():
        raise ReasonRequired("Say why the request is rejected: the requester reads it.")
    with transaction.atomic():
        request = _lock(model, pk)
        _expect(request, "rejected", RequestStatus.SUBMITTED)
        previous = request.status
        request.status = RequestStatus.REJECTED
        request.decided_by = actor.user if actor.user_id else None
        request.decided_at = timezone.now()
        request.decision_reason = reason.strip()
        request.save(update_fields=["status", "decided_by", "decided_at", "decision_reason", "updated_at"])
        _changed(request, actor, "rejected", previous, message=request.decision_reason)
    return request


def cancel(model: type[Request], pk: int, *, actor: Actor) -> Request:
    """The requester (or the backup team) withdraws a request before its work has started."""
    with transaction.atomic():
        request = _lock(model, pk)
        if actor.user_id != request.requester_id and not actor.is_backup_team:
            raise NotPermitted("Only the requester or the backup team can cancel a request.")
        _expect(request, "cancelled", RequestStatus.SUBMITTED, RequestStatus.APPROVED)
        if isinstance(request, RestoreRequest) and request.job_id:
            job = request.job
            if job.state != JobState.QUEUED:
                raise InvalidTransition("The restore has already started; it cannot be cancelled now.")
            jobs.cancel(job.pk)
        if isinstance(request, ClientRequest) and request.client_id and not request.is_retire:
            _withdraw_provisioning(request)
        previous = request.status
        request.status = RequestStatus.CANCELLED
        request.save(update_fields=["status", "updated_at"])
        _changed(request, actor, "cancelled", previous)
    return request


# --- What approval does -----------------------------------------------------------------


def _start_restore(request: RestoreRequest) -> None:
    request.job = jobs.queue_restore(
        request.backup,
        agent=request.target_agent,
        target_location=request.target_location,
        overwrite=request.overwrite,
        trigger=JobTrigger.REQUEST,
        requested_by=request.requester,
        paths=request.paths,
    )
    request.save(update_fields=["job", "updated_at"])


def _provision(request: ClientRequest, actor: Actor) -> None:
    """Create the client on its host; live at once if the host's agent is enrolled, else when it enrols.

    The host is registered for the application here (``hosts.register``). The
    caller holds the host's lock, and a system approval was only given when
    ``hosts.conflict`` found nothing, so the system never shares a host.
    """
    if hosts.conflict(request.hostname, request.application) and not actor.is_backup_team:
        raise NotPermitted(f"{request.hostname} belongs to another application: the backup team decides.")
    agent = hosts.register(
        request.hostname, request.application, actor_user=actor.user, actor_label=actor.label
    )
    live = agent.is_enrolled and agent.revoked_at is None
    client = BackupClient.objects.create(
        application=request.application,
        agent=agent if live else None,
        name=request.name,
        hostname=request.hostname,
        plugin=request.plugin,
        options=request.options,
        policy=request.policy,
        status=ClientStatus.ACTIVE if live else ClientStatus.PENDING_ENROLMENT,
        next_backup_at=request.policy.next_run_after(timezone.now()) if live else None,
    )
    request.client = client
    if not live:
        request.save(update_fields=["client", "updated_at"])
        return
    previous, request.status = request.status, RequestStatus.PROVISIONED
    request.save(update_fields=["client", "status", "updated_at"])
    _changed(request, Actor.system(), "provisioned", previous, message=f"Attached to agent {agent.hostname}.")


def _retire(request: ClientRequest, actor: Actor) -> None:
    """Retire the client; revoke the host's agent if no client of any application uses it any more.

    In the approval's transaction: the client's row is locked (``clients.retire``), and so is
    the host's name, so a request approved for the same host at the same time either sees the
    client still there or finds the agent revoked. Backups are not touched: they expire with
    their retention, and can be restored meanwhile.
    """
    hosts.lock(request.hostname)
    try:
        retired = clients.retire(request.client_id)
    except InvalidTransition as exc:
        raise InvalidTransition(f"{request}: {exc}") from exc
    done = [f"{retired.client} is retired: no new backups; its recovery points are kept until their "
            "retention ends."]
    if retired.cancelled:
        done.append(f"Cancelled {len(retired.cancelled)} queued job(s): {_job_ids(retired.cancelled)}.")
    if retired.stopping:
        done.append(f"Asked the agent to stop {_job_ids(retired.stopping)}.")
    agent = retired.client.agent
    if agent is not None and agent.revoked_at is None:
        if clients.agent_still_needed(agent):
            done.append(f"The agent on {agent.hostname} stays: other clients still use it.")
        else:
            agents.revoke(Agent.objects.filter(pk=agent.pk), by=actor.user)
            done.append(
                f"The agent on {agent.hostname} is revoked (its last client): its token no longer works. "
                "Run `backup-agent uninstall` on the server to remove it."
            )
    previous, request.status = request.status, RequestStatus.COMPLETED
    request.save(update_fields=["status", "updated_at"])
    _changed(request, Actor.system(), "retired", previous, message=" ".join(done))


def _job_ids(ids: list[int]) -> str:
    return ", ".join(f"#{pk}" for pk in ids)


def waits_for_rekey(request: ClientRequest) -> bool:
    """Approved for a host whose agent enrolled before (and was revoked): the team must re-key it."""
    if request.is_retire or request.status != RequestStatus.APPROVED or request.client is None:
        return False
    if request.client.status != ClientStatus.PENDING_ENROLMENT:
        return False
    agent = Agent.objects.filter(hostname=request.hostname).first()
    return agent is not None and agent.is_enrolled


def may_issue_enrolment(request: ClientRequest, user) -> bool:
    """Whether ``user`` gets the "enrol the server" button: the check ``issue_enrolment`` makes, read-only."""
    if user.pk != request.requester_id and not is_backup_team(user):
        return False
    if request.is_retire or request.status != RequestStatus.APPROVED or request.client is None:
        return False
    return request.client.status == ClientStatus.PENDING_ENROLMENT and not waits_for_rekey(request)


def issue_enrolment(pk: int, *, actor: Actor) -> tuple[ClientRequest, str]:
    """A fresh one-time enrolment token for an approved request; the clear text is returned once.

    Issuing voids the host's previous token, so only the newest works. Only
    the requester and the backup team may, and only while the host has never
    enrolled (an enrolled host is re-keyed by the team, not by a request).
    """
    with transaction.atomic():
        request = _lock(ClientRequest, pk)
        if actor.user_id != request.requester_id and not actor.is_backup_team:
            raise NotPermitted("Only the person who asked, or the backup team, can enrol the server.")
        _expect(request, "enrolled", RequestStatus.APPROVED)
        waiting = request.client is not None and request.client.status == ClientStatus.PENDING_ENROLMENT
        if request.is_retire or not waiting:
            raise InvalidTransition(f"{request} is not waiting for an agent.")
        # Two requests for one host issuing at once: one token per host, so one at a time.
        hosts.lock(request.hostname)
        try:
            enrolment, token = agents.issue_enrolment_token(
                application=request.application, hostname=request.hostname, created_by=actor.user
            )
        except InvalidEnrolment as exc:
            raise InvalidTransition(str(exc)) from exc
        request.enrolment = enrolment
        request.save(update_fields=["enrolment", "updated_at"])
        audit.record(
            request,
            actor,
            "enrolment_token_issued",
            message=f"A one-time enrolment token for {request.hostname}, valid until "
            f"{enrolment.expires_at:%Y-%m-%d %H:%M} UTC (earlier ones no longer work).",
        )
    return request, token


def _withdraw_provisioning(request: ClientRequest) -> None:
    client = request.client
    if client.status == ClientStatus.PENDING_ENROLMENT:
        BackupClient.objects.filter(pk=client.pk).update(status=ClientStatus.RETIRED)
        # Under the host's lock, like every decision about who holds a host.
        hosts.lock(request.hostname)
        agent = Agent.objects.filter(hostname=request.hostname).first()
        if agent is not None:
            hosts.unregister_if_unused(agent, request.application)
    if request.enrolment_id:
        # An unused token must not enrol anything any more.
        EnrolmentToken.objects.filter(
            pk=request.enrolment_id, used_at__isnull=True, voided_at__isnull=True
        ).update(voided_at=timezone.now())


# --- Following the catalog -----------------------------------------------------------------


_JOB_TO_REQUEST = {
    JobState.RUNNING: RequestStatus.RUNNING,
    JobState.SUCCEEDED: RequestStatus.COMPLETED,
    JobState.FAILED: RequestStatus.FAILED,
    JobState.CANCELLED: RequestStatus.CANCELLED,
}


def follow_job(job_id: int) -> RestoreRequest | None:
    """Move a restore request along with its job: running, then completed or failed."""
    with transaction.atomic():
        request = (
            RestoreRequest.objects.select_for_update(of=("self",))
            .select_related("job", "target_agent")
            .filter(job_id=job_id)
            .first()
        )
        if request is None:
            return None
        target = _JOB_TO_REQUEST.get(request.job.state)
        if target is None or target == request.status or request.status in RequestStatus.terminal():
            return request
        previous = request.status
        request.status = target
        if target == RequestStatus.FAILED:
            request.error = explain(request.job)
        request.save(update_fields=["status", "error", "updated_at"])
        _changed(request, Actor.agent(request.target_agent.hostname), target, previous, message=request.error)
    return request


def mark_provisioned(client_ids: list[int], hostname: str) -> list[ClientRequest]:
    """The host's agent enrolled and these clients went live: every request that asked for one is done."""
    done = []
    with transaction.atomic():
        waiting = ClientRequest.objects.select_for_update().filter(
            action=ClientAction.PROTECT, client_id__in=client_ids, status=RequestStatus.APPROVED
        )
        for request in waiting.order_by("pk"):
            previous = request.status
            request.status = RequestStatus.PROVISIONED
            request.save(update_fields=["status", "updated_at"])
            _changed(request, Actor.agent(hostname), "provisioned", previous, message="The agent enrolled.")
            done.append(request)
    return done
