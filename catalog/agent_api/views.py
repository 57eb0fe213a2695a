"""Agent API (/api/agent/v1/): enrol, poll, progress, index upload, complete. Thin: the services decide."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from catalog import agent_versions
from catalog.agent_api.authentication import AgentTokenAuthentication, IsAgent, agent_of
from catalog.agent_api.serializers import (
    SHA256_HEX,
    CompleteSerializer,
    EnrolSerializer,
    ProgressSerializer,
    job_payloads,
    plain_poll,
    validated_poll,
)
from catalog.choices import BackupLevel, ErrorClass, JobKind, JobState
from catalog.errors import LeaseLost
from catalog.file_index import FileIndex, IndexError_
from catalog.models import Agent, Backup, Job
from catalog.services import agents, file_lists, jobs, orphans


class EnrolThrottle(AnonRateThrottle):
    # Enrolment tokens are 256-bit, so guessing is hopeless; this only stops a flood.
    # PORTAL_AGENT_ENROL_RATE (settings) raises it for a mass roll-out or the fleet simulator.
    scope = "agent_enrol"


class EnrolView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [EnrolThrottle]

    def post(self, request):
        data = EnrolSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agents.check_protocol(None, data.validated_data.get("protocol", 1))
        agent, token = agents.enrol(**data.validated_data)
        return Response(
            {
                "agent_id": agent.pk,
                "hostname": agent.hostname,
                "agent_token": token,
                "poll_after": settings.PORTAL_AGENT_POLL_SECONDS,
            },
            status=status.HTTP_201_CREATED,
        )


class JSONAnswers(DefaultContentNegotiation):
    """Agents are answered in JSON whatever they accept: no Accept header parsed on every poll."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class AgentView(APIView):
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAgent]
    # Agents are not rate-limited (the public API's throttles count API keys and people) and
    # speak JSON only: nothing to count or negotiate on the portal's most frequent request.
    throttle_classes: list = []
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONAnswers

    #: Refuse an agent whose recorded protocol is older than the oldest the portal speaks. The poll
    #: checks the protocol of its own body instead: the first poll after an upgrade must pass.
    checks_recorded_protocol = True

    @property
    def agent(self):
        return self.request.auth

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.checks_recorded_protocol:
            agents.check_protocol(self.agent, self.agent.protocol)


def answer_poll(agent: Agent, poll: dict) -> dict:
    """What a poll does and answers, whichever door it came in by (``poll`` or ``PollView``)."""
    agents.check_instance(agent, poll["instance"])
    arrived = timezone.now()
    # Writes only when something changed or the recorded last poll is getting old.
    agents.heartbeat(
        agent,
        version=poll["version"],
        plugins=poll["plugins"],
        allow_list=poll["allow"],
        protocol=poll["protocol"],
        now=arrived,
    )
    # After the heartbeat: a refused agent's version and protocol show in the admin and the metrics.
    agents.check_protocol(agent, poll["protocol"])
    # The agent's queued and running jobs, read with its token, decide whether there is anything
    # to do: an idle poll is that one read (and the connection's health check), no transaction.
    seen = agent.open_jobs
    # Before this poll's own claim: a job handed out in this answer is never judged by it.
    lost = jobs.reconcile_running(agent, poll["running"], claimed_before=arrived, seen=seen)
    # Only a poll that lists its archives touches orphans: an idle poll stays as cheap as before.
    remove = None
    if "archives" in poll:
        remove = orphans.record_report(agent, poll["archives"], arrived)
    # A lost restore may have been queued again: then the claim reads afresh.
    claimed = jobs.claim(agent, seen=None if lost else seen)
    body = {
        "jobs": job_payloads(claimed),
        "poll_after": settings.PORTAL_AGENT_POLL_SECONDS,
    }
    if remove is not None:
        body["remove_archives"] = remove
    if (upgrade := agents.upgrade_offer(agent, poll["version"])) is not None:
        body["upgrade"] = upgrade
    return body


class PollView(AgentView):
    """The poll through DRF: every case, errors in the API's shape (``poll`` sends what it does not take)."""

    checks_recorded_protocol = False

    def post(self, request):
        return Response(answer_poll(self.agent, validated_poll(request.data)))


_POLL_VIEW = PollView.as_view()


@csrf_exempt  # as every DRF view is: an agent authenticates with its token, not a cookie
def poll(request: HttpRequest) -> HttpResponse:
    """The agents' poll, the portal's most frequent request: the steady state takes a short door.

    A POST with a JSON body ``plain_poll`` accepts, a well-formed token of a live
    agent and the instance it is bound to (or none) is answered here, through
    ``answer_poll``, as ``PollView`` would answer it, byte for byte; DRF's request,
    negotiation, parsing and response wrapping cost more than an idle poll's own
    work. Everything else (no or a bad token, another body, an instance to bind or
    to refuse, a wrong method) goes through ``PollView``, which decides and words
    the errors. tests/catalog/test_idle_poll.py holds the two doors equal.
    """
    if request.method == "POST" and request.content_type == "application/json":
        agent = agent_of(request)
        if agent is not None:
            try:
                body = plain_poll(json.loads(request.body))
            except (ValueError, RecursionError):
                body = None
            if (
                body is not None
                and (body["instance"] is None or body["instance"]["id"] == agent.instance_id)
                and agent_versions.is_supported(body["protocol"])  # a refusal is worded by PollView
            ):
                answer = JSONRenderer().render(answer_poll(agent, body))
                return HttpResponse(answer, content_type="application/json")
    return _POLL_VIEW(request)


class ProgressView(AgentView):
    def post(self, request, job_id: int):
        get_object_or_404(Job, pk=job_id, agent=self.agent)
        data = ProgressSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = jobs.record_progress(self.agent, job_id, **data.validated_data)
        return Response(
            {
                "lease_expires_at": job.lease_expires_at,
                "cancel": bool(job.cancel_requested_at) or job.state != JobState.RUNNING,
                "report_after": jobs.progress_interval(),
            }
        )


class CompleteView(AgentView):
    def post(self, request, job_id: int):
        job = get_object_or_404(Job.objects.select_related("client"), pk=job_id, agent=self.agent)
        data = CompleteSerializer(data=request.data, context={"job": job})
        data.is_valid(raise_exception=True)
        report = data.validated_data
        if report["status"] == CompleteSerializer.FAILED:
            job = jobs.complete_failure(
                self.agent,
                job_id,
                error=report["error"],
                error_class=report["error_class"],
                damaged=report["damaged"],
                log_tail=report["log_tail"],
                reported_started_at=report.get("started_at"),
                reported_finished_at=report.get("finished_at"),
            )
            return Response({"acknowledged": True, "job": job.pk, "state": job.state})
        backup_report = None
        if "sha256" in report:
            backup_report = jobs.BackupReport(
                size=report["size"],
                stored_size=report["stored_size"],
                location=report["location"],
                sha256=report["sha256"],
                compression=report["compression"],
                manifest=report["manifest"],
                index=report.get("index"),
                level=report.get("level") or BackupLevel.FULL,
                base=report.get("base"),
            )
        job, backup = jobs.complete_success(
            self.agent,
            job_id,
            report=backup_report,
            log_tail=report["log_tail"],
            reported_started_at=report.get("started_at"),
            reported_finished_at=report.get("finished_at"),
        )
        body = {"acknowledged": True, "job": job.pk, "state": job.state}
        if backup is not None:
            body["backup"] = backup.pk
        return Response(body)


#: Bytes read from the request per step while an index streams to disk.
UPLOAD_CHUNK = 1 << 20


class IndexUploadView(AgentView):
    """``PUT jobs/<id>/index``: a backup's file list, raw bytes, before its completion report.

    Streamed to ``file_lists.incoming_file`` under a temporary name and renamed once its
    size, SHA-256 (``X-Index-SHA256``) and format check out; ``complete_success`` moves
    it into place when the report names it. Never read into memory whole.
    """

    def put(self, request, job_id: int):
        job = get_object_or_404(Job, pk=job_id, agent=self.agent)
        sha = request.headers.get("X-Index-SHA256", "").strip().lower()
        if not SHA256_HEX.match(sha):
            return _refuse(400, "invalid", "Send the file's SHA-256 in X-Index-SHA256 (64 hex digits).")
        expected = _expects_index(job, sha)
        if expected is None:
            raise LeaseLost(f"Job {job.pk} is {job.state}; its file list is no longer expected.")
        if not expected:
            return Response(status=status.HTTP_204_NO_CONTENT)  # already in place: the same upload again
        limit = settings.PORTAL_INDEX_MAX_MB * 1024 * 1024
        try:
            length = int(request.META.get("CONTENT_LENGTH") or "")
        except ValueError:
            return _refuse(411, "length_required", "Send the file with a Content-Length.")
        too_large = f"A file list may be at most {settings.PORTAL_INDEX_MAX_MB} MB."
        if length > limit:
            return _refuse(413, "too_large", too_large)
        final = file_lists.incoming_file(job.pk, sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f"{final.name}.{secrets.token_hex(6)}.part")
        try:
            digest, size = _receive(request, partial, limit)
            if size > limit:
                return _refuse(413, "too_large", too_large)
            if digest != sha:
                return _refuse(400, "invalid", "The file list's SHA-256 is not the one in X-Index-SHA256.")
            try:
                FileIndex(partial)
            except (OSError, IndexError_) as exc:
                return _refuse(400, "invalid", f"This is not a file list the portal can read: {exc}.")
            os.replace(partial, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _expects_index(job: Job, sha: str) -> bool | None:
    """True: ``job`` may still receive its file list (``complete`` may still take it); False: this
    very file list is already in place; None: too late, or not a backup."""
    if job.kind != JobKind.BACKUP:
        return None
    if job.state == JobState.RUNNING:
        return True
    if job.state == JobState.FAILED and job.error_class == ErrorClass.LEASE_EXPIRED:
        return True  # a late report may still be accepted (jobs._late_acceptable)
    if job.state == JobState.SUCCEEDED:
        backup = Backup.objects.filter(job=job).only("index_entries", "index_sha256").first()
        if backup is None:
            return None
        if backup.index_entries is None:
            return True  # it comes after the report: the report, resent, attaches it
        return False if backup.index_sha256 == sha else None
    return None


def _receive(request, path, limit: int) -> tuple[str, int]:
    """Copy the body to ``path`` in chunks; (hex SHA-256, bytes). Stops reading past ``limit``."""
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as out:
        while chunk := request._request.read(UPLOAD_CHUNK):
            size += len(chunk)
            if size > limit:
                break
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def _refuse(code: int, error: str, detail: str) -> Response:
    return Response({"code": error, "detail": detail}, status=code)
