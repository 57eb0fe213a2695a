"""The public API's writes (/api/v1/): restore and client requests, their decisions, and backup now.

Thin, as the web views are: look the object up through the caller's tenancy
(anything else is a 404), validate the body, call one service function, and
return the representation. The services decide who may do what — the backup
team approves and rejects, nobody approves their own request, whatever the
channel — and core/api/errors.py answers their errors with their status codes.

Every POST runs in one transaction and honours ``Idempotency-Key``
(``IdempotentPostMixin``). On top of that a ticket is idempotent by itself: a
create whose ``external_ref`` this integration (API key) already used answers
200 with the existing request instead of 201 with a new one, even when the
duplicates arrive at the same moment (the unique constraint on
``(api_key, external_ref)`` keeps one; the loser finds it). For people signed
in with a session ``external_ref`` is only a note: they are not integrations.
"""

from __future__ import annotations

from django.db import IntegrityError
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import GenericAPIView, get_object_or_404
from rest_framework.response import Response

from catalog.api.serializers import JobSerializer
from catalog.choices import JobTrigger
from catalog.models import BackupClient, Job
from catalog.services import jobs
from core.api.errors import LIST_ERRORS, READ_ERRORS, error_responses
from requests_app import services
from requests_app.actors import Actor
from requests_app.api.idempotency import IdempotentPostMixin
from requests_app.api.parsers import StrictJSONParser
from requests_app.api.schema import IDEMPOTENCY_KEY
from requests_app.api.serializers import (
    ClientRequestCreateSerializer,
    ClientRequestSerializer,
    EnrolmentSerializer,
    RejectSerializer,
    RestoreRequestCreateSerializer,
    RestoreRequestSerializer,
)
from requests_app.choices import Channel, ClientAction
from requests_app.enrolment import enrol_command, install_command
from requests_app.errors import InvalidRequest
from requests_app.filtersets import ClientRequestFilterSet, RestoreRequestFilterSet
from requests_app.models import ApiKey, ClientRequest, RestoreRequest


def actor_for(request) -> Actor:
    """The integration for a key, else the signed-in person; either way through the API channel."""
    if isinstance(request.auth, ApiKey):
        return Actor.integration(request.auth)
    return Actor.signed_in(request, Channel.API)


def request_schema(name: str, representation: type, create: type):
    """The OpenAPI description of one kind of request's endpoints."""
    post_errors = (400, 401, 404, 422, 429)
    return extend_schema_view(
        list=extend_schema(
            summary=f"List {name}s", responses={200: representation, **error_responses(*LIST_ERRORS)}
        ),
        retrieve=extend_schema(responses={200: representation, **error_responses(*READ_ERRORS)}),
        create=extend_schema(
            summary=f"Submit a {name}",
            description="201 with the new request; 200 with the existing one when this integration "
            "already sent this external_ref.",
            request=create,
            parameters=[IDEMPOTENCY_KEY],
            responses={
                201: representation,
                200: OpenApiResponse(representation, description="This external_ref's existing request."),
                **error_responses(400, 401, 415, 422, 429),
            },
        ),
        approve=extend_schema(
            summary=f"Approve a {name} (backup team; never one's own)",
            request=None,
            parameters=[IDEMPOTENCY_KEY],
            responses={200: representation, **error_responses(403, 409, *post_errors)},
        ),
        reject=extend_schema(
            summary=f"Reject a {name} (backup team), with a reason",
            request=RejectSerializer,
            parameters=[IDEMPOTENCY_KEY],
            responses={200: representation, **error_responses(403, 409, 415, *post_errors)},
        ),
        cancel=extend_schema(
            summary=f"Cancel a {name} (the requester or the backup team) before its work started",
            request=None,
            parameters=[IDEMPOTENCY_KEY],
            responses={200: representation, **error_responses(403, 409, *post_errors)},
        ),
    )


class RequestViewSet(
    IdempotentPostMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Requests of the caller's applications and the caller's own, newest first; submit and decide."""

    parser_classes = [StrictJSONParser]
    create_serializer_class: type
    related: tuple[str, ...] = ()

    def get_queryset(self):
        return (
            self.queryset.model.objects.for_person(self.request.user)
            .select_related(*self.related)
            .order_by("-created_at", "-id")
        )

    def get_serializer_class(self):
        if self.action == "create":
            return self.create_serializer_class
        if self.action == "reject":
            return RejectSerializer
        return self.serializer_class

    def submit(self, actor: Actor, data: dict):
        raise NotImplementedError

    def create(self, request):
        existing = self._existing(
            request.data.get("external_ref") if isinstance(request.data, dict) else None
        )
        if existing is not None:
            self._check_same_ask(existing, request.data)
            return self._represent(existing, status.HTTP_200_OK)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            created = self.submit(actor_for(request), serializer.validated_data)
        except (IntegrityError, InvalidRequest):
            # A duplicate of this ticket committed while we validated: the constraint kept it
            # (submit_client reports that as "already open"). Answer with it; anything else is real.
            existing = self._existing(serializer.validated_data["external_ref"])
            if existing is None:
                raise
            self._check_same_ask(existing, request.data)
            return self._represent(existing, status.HTTP_200_OK)
        return self._represent(created, status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        obj = self.get_object()
        services.approve(self.queryset.model, obj.pk, actor=actor_for(request))
        return self._represent(obj, status.HTTP_200_OK)

    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        obj = self.get_object()
        serializer = RejectSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.reject(
            self.queryset.model, obj.pk, actor=actor_for(request), reason=serializer.validated_data["reason"]
        )
        return self._represent(obj, status.HTTP_200_OK)

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        obj = self.get_object()
        services.cancel(self.queryset.model, obj.pk, actor=actor_for(request))
        return self._represent(obj, status.HTTP_200_OK)

    def _check_same_ask(self, existing, data) -> None:
        """A retried POST answers with the first request; a different ask under its ticket is refused."""

    def _existing(self, external_ref: object):
        """This integration's request for ``external_ref``, if it sent one before."""
        key = self.request.auth
        if not isinstance(key, ApiKey) or not isinstance(external_ref, str) or not external_ref.strip():
            return None
        return self.get_queryset().filter(api_key=key, external_ref=external_ref.strip()).first()

    def _represent(self, obj, code: int) -> Response:
        fresh = self.get_queryset().get(pk=obj.pk)  # as it is now, with what the representation joins
        return Response(self.serializer_class(fresh, context=self.get_serializer_context()).data, status=code)


@request_schema("restore request", RestoreRequestSerializer, RestoreRequestCreateSerializer)
class RestoreRequestViewSet(RequestViewSet):
    """Restores of a recovery point onto an agent. A restore to a new location on a server of the same
    application is approved at once; overwriting, or crossing applications, waits for the backup team."""

    queryset = RestoreRequest.objects.none()
    serializer_class = RestoreRequestSerializer
    create_serializer_class = RestoreRequestCreateSerializer
    filterset_class = RestoreRequestFilterSet
    related = ("target_agent",)

    def submit(self, actor: Actor, data: dict) -> RestoreRequest:
        return services.submit_restore(actor=actor, **data)


@request_schema("client request", ClientRequestSerializer, ClientRequestCreateSerializer)
class ClientRequestViewSet(RequestViewSet):
    """New workloads to protect, and protected ones to retire (``action``). Once a protect request is
    approved, the requester issues a one-time enrolment token (``POST …/enrolment-token/``) and pastes
    the install command it comes with on the server; when the agent has enrolled, the request is
    provisioned and names its client. A retire request (``{"action": "retire", "client": <id>}``) waits
    for the backup team; approved, the client is retired (no new backups; its recovery points are kept
    until their retention ends), its queued backups are cancelled, the host's agent is revoked when no
    client of any application uses it any more, and the request is completed."""

    queryset = ClientRequest.objects.none()
    serializer_class = ClientRequestSerializer
    create_serializer_class = ClientRequestCreateSerializer
    filterset_class = ClientRequestFilterSet
    related = ("application", "policy")
    # The token is shown in this one answer: an Idempotency-Key replay must not hold it.
    unreplayable_actions = ("enrolment_token",)

    def _check_same_ask(self, existing: ClientRequest, data) -> None:
        # One ticket names one request: a retire sent under a protect request's reference (or the
        # reverse) would otherwise be answered with the other request, and nothing retired.
        action = data.get("action", ClientAction.PROTECT) if isinstance(data, dict) else None
        if action != existing.action:
            raise InvalidRequest(
                {"external_ref": f"{existing.external_ref} already names client request #{existing.pk}, "
                 f"which asks to {existing.action}: use another reference for this {action} request."}
            )  # fmt: skip

    def submit(self, actor: Actor, data: dict) -> ClientRequest:
        if data.pop("action") == ClientAction.RETIRE:
            return services.submit_retire(actor=actor, **data)
        return services.submit_client(actor=actor, **data)

    @extend_schema(
        summary="Issue a one-time enrolment token for an approved client request (the requester or the team)",
        description="Voids any earlier token for the host. The token is in this answer only: it is "
        "stored hashed, and a retry with the same Idempotency-Key answers 409.",
        request=None,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: EnrolmentSerializer, **error_responses(403, 409, 400, 401, 404, 422, 429)},
    )
    @action(detail=True, methods=["post"], url_path="enrolment-token")
    def enrolment_token(self, request, pk=None):
        obj = self.get_object()
        updated, token = services.issue_enrolment(obj.pk, actor=actor_for(request))
        body = {
            "token": token,
            "expires_at": updated.enrolment.expires_at,
            "enrol_command": enrol_command(updated, token),
            "install_command": install_command(updated, token),
        }
        return Response(EnrolmentSerializer(body).data, status=status.HTTP_201_CREATED)


class BackupNowView(IdempotentPostMixin, GenericAPIView):
    """Queue a backup of a client now: self-service, for anybody who sees the client (its owners, the team).

    A backup changes nothing on the workload and is what the policy does anyway,
    so, unlike a restore, it needs nobody's approval.
    """

    parser_classes = [StrictJSONParser]
    queryset = BackupClient.objects.none()
    serializer_class = JobSerializer

    @extend_schema(
        summary="Back up a client now",
        operation_id="clients_backup_now",
        tags=["clients"],
        request=None,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            202: OpenApiResponse(JobSerializer, description="A backup job was queued: this one."),
            200: OpenApiResponse(
                JobSerializer,
                description="A backup of this client was already queued or running (see its state): "
                "this is that job, and nothing new was queued.",
            ),
            **error_responses(400, 401, 404, 409, 422, 429),
        },
    )
    def post(self, request, pk):
        client = get_object_or_404(BackupClient.objects.visible_to(request.user), pk=pk)
        job, created = jobs.get_or_queue_backup(client, trigger=JobTrigger.USER, requested_by=request.user)
        job = Job.objects.select_related("agent").get(pk=job.pk)
        return Response(
            JobSerializer(job).data, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
        )
