"""Requests in the public API: their representations and what a POST may send.

Objects named in a body (a backup, an agent, an application, a policy) are
looked up through ``visible_to(caller)``. One the caller may not see gets the
same 400 field error as one that does not exist — "does not exist" — so a body
never reveals what other tenants have. (Objects in the *URL* are a 404, as the
contract says; a body is input to validate, hence a field error.)
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.text import slugify
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from catalog.choices import Plugin
from catalog.filtersets import MAX_ID
from catalog.models import Agent, Application, Backup, BackupClient, ProtectionPolicy, hostname_validator
from catalog.plugin_options import validate_options
from catalog.services.file_lists import MAX_SELECTION
from requests_app.choices import ClientAction, RequestStatus
from requests_app.models import ClientRequest, RestoreRequest

#: Free text a person writes; generous, but bounded.
TEXT_LIMIT = 10_000


class HostnameRelatedField(serializers.SlugRelatedField):
    """An agent named by host name; host names are stored in lower case."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = data.strip().lower()
        return super().to_internal_value(data)


def _visible(queryset, request):
    return queryset.visible_to(request.user) if request is not None else queryset.none()


# --- Restore requests ----------------------------------------------------------------------------


class RestoreRequestSerializer(serializers.ModelSerializer):
    target_agent = serializers.SlugRelatedField(slug_field="hostname", read_only=True)
    paths = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="What is restored: files and folders, or tables; empty: the whole recovery point.",
    )

    class Meta:
        model = RestoreRequest
        fields = (
            "id",
            "status",
            "needs_approval",
            "approval_rule",
            "backup",
            "target_agent",
            "target_location",
            "overwrite",
            "paths",
            "reason",
            "external_ref",
            "job",
            "error",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class RestoreRequestCreateSerializer(serializers.Serializer):
    backup = serializers.PrimaryKeyRelatedField(
        queryset=Backup.objects.none(),
        pk_field=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        help_text="The id of the recovery point to restore.",
    )
    target_agent = HostnameRelatedField(
        slug_field="hostname",
        queryset=Agent.objects.none(),
        help_text="Host name of the agent to restore onto.",
    )
    target_location = serializers.CharField(
        max_length=1000, help_text="An absolute path, or a database name for the database plugins."
    )
    overwrite = serializers.BooleanField(default=False, help_text="Replace existing data (needs approval).")
    paths = serializers.ListField(
        child=serializers.CharField(max_length=4096, trim_whitespace=False),
        required=False,
        default=list,
        max_length=MAX_SELECTION,
        help_text="Restore only these: absolute paths of files and folders (or /schema/table, /table for "
        "a database) as GET /backups/{id}/files/ shows them. Empty or absent: the whole recovery point.",
    )
    reason = serializers.CharField(max_length=TEXT_LIMIT, allow_blank=True, default="")
    external_ref = serializers.CharField(
        max_length=100, allow_blank=True, default="", help_text="Your ticket; unique per integration."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        self.fields["backup"].queryset = _visible(Backup.objects, request).select_related(
            "client__application", "client__agent"
        )
        self.fields["target_agent"].queryset = _visible(Agent.objects, request)


# --- Client requests -----------------------------------------------------------------------------


class ClientRequestSerializer(serializers.ModelSerializer):
    application = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    policy = serializers.SlugRelatedField(slug_field="name", read_only=True)
    options = serializers.DictField(read_only=True)
    client = serializers.SerializerMethodField(
        help_text="protect: the new client's id, once provisioned; retire: the id of the client to retire."
    )
    approval_rule = serializers.CharField(
        read_only=True, help_text="Why it needs (or did not need) the backup team's approval."
    )

    class Meta:
        model = ClientRequest
        fields = (
            "id",
            "action",
            "status",
            "needs_approval",
            "application",
            "hostname",
            "name",
            "plugin",
            "options",
            "policy",
            "justification",
            "external_ref",
            "approval_rule",
            "client",
            "error",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_client(self, obj: ClientRequest) -> int | None:
        if obj.action == ClientAction.RETIRE or obj.status == RequestStatus.PROVISIONED:
            return obj.client_id
        return None


class EnrolmentSerializer(serializers.Serializer):
    """A fresh one-time enrolment token, shown in this answer only."""

    token = serializers.CharField(help_text="Works once, for this host only; issuing another voids it.")
    expires_at = serializers.DateTimeField()
    enrol_command = serializers.CharField(
        help_text="Run as root on the server, once, where the agent is installed already (.deb, pip, zipapp)."
    )
    install_command = serializers.CharField(
        help_text="The one paste, as root on a new server: the portal's install.sh downloads the agent, "
        "verifies its SHA-256, enrols with this token and allow-list and starts the service."
    )


#: What a protect request must name; a retire request names only its ``client``.
PROTECT_FIELDS = ("application", "hostname", "plugin", "options", "policy")


class ClientRequestCreateSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=ClientAction.choices,
        default=ClientAction.PROTECT,
        help_text="protect (default): a new client, named by application, hostname, plugin, options and "
        "policy. retire: end the protection of the client named by ``client``; nothing else is needed.",
    )
    client = serializers.PrimaryKeyRelatedField(
        queryset=BackupClient.objects.none(),
        required=False,
        pk_field=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        help_text="retire: the id of the client to retire (GET /clients/).",
    )
    application = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Application.objects.none(),
        required=False,
        help_text="protect: the application's slug.",
    )
    hostname = serializers.CharField(max_length=253, validators=[hostname_validator], required=False)
    name = serializers.SlugField(
        max_length=100,
        required=False,
        help_text="The client's name in the application; default: the host's first label and the plugin, "
        "e.g. db01-postgresql for db01.example.com.",
    )
    plugin = serializers.ChoiceField(choices=Plugin.choices, required=False)
    options = serializers.DictField(
        required=False,
        help_text="Per plugin: files {paths, exclude}; postgresql and mysql "
        "{database, host, port, user}; command {backup_argv, restore_argv}.",
    )
    policy = serializers.SlugRelatedField(
        slug_field="name",
        queryset=ProtectionPolicy.objects.none(),
        required=False,
        help_text="protect: the policy's name.",
    )
    justification = serializers.CharField(max_length=TEXT_LIMIT, allow_blank=True, default="")
    external_ref = serializers.CharField(
        max_length=100, allow_blank=True, default="", help_text="Your ticket; unique per integration."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        self.fields["application"].queryset = _visible(Application.objects, request)
        self.fields["policy"].queryset = _visible(ProtectionPolicy.objects, request)
        self.fields["client"].queryset = _visible(BackupClient.objects, request).select_related("application")

    def validate_hostname(self, value: str) -> str:
        return value.lower()

    def validate(self, attrs: dict) -> dict:
        if attrs["action"] == ClientAction.RETIRE:
            if "client" not in attrs:
                raise serializers.ValidationError({"client": ["This field is required."]})
            return {key: attrs[key] for key in ("action", "client", "justification", "external_ref")}
        missing = [name for name in PROTECT_FIELDS if name not in attrs]
        if missing:
            raise serializers.ValidationError({name: ["This field is required."] for name in missing})
        attrs.pop("client", None)
        try:
            validate_options(attrs["plugin"], attrs["options"])
        except DjangoValidationError as exc:
            # Option rules name keys inside the object ("paths", "port"): all are errors of ``options``.
            raise serializers.ValidationError(
                {
                    "options": [
                        message if key == "options" else f"{key}: {message}"
                        for key, messages in exc.message_dict.items()
                        for message in messages
                    ]
                }
            ) from exc
        if not attrs.get("name"):
            attrs["name"] = default_client_name(attrs["hostname"], attrs["plugin"])
        return attrs


def default_client_name(hostname: str, plugin: str) -> str:
    """``db01.example.com`` + postgresql → ``db01-postgresql``: short, and what people call it."""
    return slugify(f"{hostname.split('.')[0]}-{plugin}")[:100]


# --- Decisions -------------------------------------------------------------------------------------


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=TEXT_LIMIT,
        allow_blank=True,
        help_text="Why the request is rejected; the requester reads it. A blank reason is refused.",
    )
