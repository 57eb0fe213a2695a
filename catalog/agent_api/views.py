"""Agent API (/api/agent/v1/): enrol, poll, progress, complete. Thin: the services decide."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.utils import timezone
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from catalog.agent_api.authentication import AgentTokenAuthentication, IsAgent
from catalog.agent_api.serializers import (
    CompleteSerializer,
    EnrolSerializer,
    PollSerializer,
    ProgressSerializer,
    job_payload,
)
from catalog.choices import JobState
from catalog.models import Job
from catalog.services import agents, jobs, orphans


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


class AgentView(APIView):
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAgent]

    @property
    def agent(self):
        return self.request.auth


class PollView(AgentView):
    def post(self, request):
        data = PollSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agents.check_instance(self.agent, data.validated_data["instance"])
        arrived = timezone.now()
        agents.heartbeat(
            self.agent,
            version=data.validated_data["version"],
            plugins=data.validated_data["plugins"],
            allow_list=data.validated_data["allow"],
            protocol=data.validated_data["protocol"],
            now=arrived,
        )
        # Before this poll's own claim: a job handed out in this answer is never judged by it.
        jobs.reconcile_running(self.agent, data.validated_data["running"], claimed_before=arrived)
        # Only a poll that lists its archives touches orphans: an idle poll stays as cheap as before.
        remove = None
        if "archives" in data.validated_data:
            remove = orphans.record_report(self.agent, data.validated_data["archives"], arrived)
        claimed = jobs.claim(self.agent)
        body = {
            "jobs": [job_payload(job) for job in claimed],
            "poll_after": settings.PORTAL_AGENT_POLL_SECONDS,
        }
        if remove is not None:
            body["remove_archives"] = remove
        return Response(body)


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
