"""Web forms for requests. They check what a person typed; the services decide and record.

Choices come from ``visible_to(user)`` querysets, so an agent, policy or
application of another tenant is "not one of the available choices" — the form
refuses it server-side, whatever the browser sent.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from catalog import levels
from catalog.choices import Plugin
from catalog.models import Agent, Application, Backup, BackupClient, ProtectionPolicy, hostname_validator
from catalog.plugin_options import validate_options, validate_restore_target
from catalog.services.file_lists import MAX_SELECTION
from requests_app import rules
from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest

DATABASE_PLUGINS = (Plugin.POSTGRESQL, Plugin.MYSQL)


def apply_errors(
    form: forms.Form, errors: dict[str, object], field_names: dict[str, str] | None = None
) -> None:
    """Put domain errors (``InvalidRequest.errors``, option rules) on the form's fields.

    ``field_names`` maps an error key to a form field; unknown keys become form-wide errors.
    """
    for key, messages in errors.items():
        field = (field_names or {}).get(key, key)
        if field not in form.fields:
            field = None
        for message in messages if isinstance(messages, list | tuple) else [messages]:
            form.add_error(field, message)


def restore_targets(user):
    """Agents ``user`` may restore onto: visible to them and not revoked."""
    return Agent.objects.visible_to(user).filter(revoked_at__isnull=True).order_by("hostname")


# --- Restore ------------------------------------------------------------------------------


_TARGET_LOCATION = {
    Plugin.FILES: (
        "Target folder",
        "An absolute path on the target server, e.g. /srv/restore/2025-01-31. "
        "The backup is unpacked into it; the folder should be new or empty.",
        "/srv/restore/…",
    ),
    Plugin.POSTGRESQL: (
        "Target database",
        "The name of the PostgreSQL database to restore into on the target server, e.g. orders_restored. "
        "Letters, digits, _, $ or -.",
        "orders_restored",
    ),
    Plugin.MYSQL: (
        "Target database",
        "The name of the MySQL / MariaDB database to restore into on the target server, "
        "e.g. shop_restored. Letters, digits, _, $ or -.",
        "shop_restored",
    ),
    Plugin.COMMAND: (
        "Target location",
        "An absolute path on the target server, handed to the client's restore command as {target}.",
        "/srv/restore/…",
    ),
}


def distinct_paths(value) -> list[str]:
    """The paths of a ``path`` parameter (one or several), blanks and repeats dropped, in order."""
    values = [] if not value else [value] if isinstance(value, str) else list(value)
    return list(dict.fromkeys(v.strip() for v in values if isinstance(v, str) and v.strip()))


class SelectionField(forms.Field):
    """The paths chosen in the file browser or search (``?path=…&path=…``), carried as hidden inputs.

    Only their shape is checked here; whether each is in the recovery point is the service's
    (``file_lists.check_selection``), whose errors come back on this field.
    """

    widget = forms.MultipleHiddenInput

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value) -> list[str]:
        paths = distinct_paths(value)
        if len(paths) > MAX_SELECTION:
            raise ValidationError(
                f"Choose at most {MAX_SELECTION} paths, or restore the whole recovery point."
            )
        return paths


class RestoreForm(forms.Form):
    path = SelectionField()
    target_agent = forms.ModelChoiceField(
        queryset=Agent.objects.none(),
        label="Restore onto server",
        help_text="Servers of your applications that have an enrolled agent.",
        empty_label=None,
    )
    target_location = forms.CharField(max_length=1000)
    overwrite = forms.BooleanField(
        required=False,
        label="Overwrite existing data at the target",
        help_text=(
            "Replaces files or database objects that already exist at the target. This cannot be undone, "
            "and it always needs the backup team's approval. Leave it off to restore next to the live data."
        ),
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="Why you need this restore; the backup team reads it if approval is needed.",
    )
    external_ref = forms.CharField(
        max_length=100, required=False, label="Ticket", help_text="Optional, e.g. INC0012345."
    )

    def __init__(self, *args, backup: Backup, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.backup = backup
        plugin = backup.client.plugin
        self.fields["target_agent"].queryset = restore_targets(user)
        label, help_text, placeholder = _TARGET_LOCATION.get(plugin, _TARGET_LOCATION[Plugin.FILES])
        location = self.fields["target_location"]
        location.label, location.help_text = label, help_text
        location.widget.attrs.update(placeholder=placeholder, autocomplete="off", spellcheck="false")
        if backup.client.agent_id:
            self.fields["target_agent"].initial = backup.client.agent_id

    def selected_paths(self) -> list[str]:
        """What the person chose to restore (empty: everything), as sent."""
        return distinct_paths(self["path"].value())

    def clean_target_location(self) -> str:
        value = self.cleaned_data["target_location"].strip()
        try:
            return validate_restore_target(self.backup.client.plugin, value)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["target_location"]) from exc

    def decision(self) -> rules.Decision | None:
        """The approval rule for what the form holds now (the defaults before anything was typed)."""
        agent = self._chosen_agent()
        if agent is None:
            return None
        overwrite = self.cleaned_data.get("overwrite", False) if self.is_bound else False
        return rules.restore_decision(backup=self.backup, target_agent=agent, overwrite=overwrite)

    def _chosen_agent(self) -> Agent | None:
        if self.is_bound:
            return self.cleaned_data.get("target_agent") if hasattr(self, "cleaned_data") else None
        # Unbound: the agent the browser will show selected — the client's own, else the first.
        choices = self.fields["target_agent"].queryset
        initial = self.fields["target_agent"].initial
        return (choices.filter(pk=initial).first() if initial else None) or choices.first()


# --- Protect a new server -------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class PolicyChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, policy: ProtectionPolicy) -> str:
        approval = (
            "approved automatically" if policy.auto_approve_clients else "needs the backup team's approval"
        )
        return (
            f"{policy.name} — RPO {policy.rpo_hours} h, kept {policy.retention_days} days, "
            f"{levels.level_scheme(policy)}, {policy.price_per_gb_month}/GB-month; {approval}"
        )


class ClientRequestForm(forms.Form):
    """Protect a new workload: the host, what to back up (per plugin) and the service tier."""

    #: Option key (catalog.plugin_options) → form field.
    OPTION_FIELDS = {
        "paths": "paths",
        "exclude": "exclude",
        "database": "database",
        "host": "db_host",
        "port": "db_port",
        "user": "db_user",
        "backup_argv": "backup_argv",
        "restore_argv": "restore_argv",
        "plugin": "plugin",
    }
    #: The fields each plugin uses; only the chosen plugin's are validated.
    PLUGIN_FIELDS = {
        Plugin.FILES: ("paths", "exclude"),
        Plugin.POSTGRESQL: ("database", "db_host", "db_port", "db_user"),
        Plugin.MYSQL: ("database", "db_host", "db_port", "db_user"),
        Plugin.COMMAND: ("backup_argv", "restore_argv"),
    }
    REQUIRED = {
        Plugin.FILES: {"paths": "List at least one folder to back up."},
        Plugin.POSTGRESQL: {"database": "Enter the name of the database to back up."},
        Plugin.MYSQL: {"database": "Enter the name of the database to back up."},
        Plugin.COMMAND: {
            "backup_argv": "Enter the backup command, one argument per line.",
            "restore_argv": "Enter the restore command, one argument per line.",
        },
    }

    hostname = forms.CharField(
        max_length=253,
        validators=[hostname_validator],
        label="Server host name",
        help_text="The fully qualified name of the server to protect, e.g. db02.example.com.",
    )
    name = forms.SlugField(
        max_length=100,
        label="Client name",
        help_text="A short name for this workload, unique in the application, e.g. orders-db.",
    )
    plugin = forms.ChoiceField(
        choices=Plugin.choices, widget=forms.RadioSelect, label="Kind of data", initial=Plugin.FILES
    )

    paths = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        label="Folders",
        help_text="One absolute path per line, e.g. /srv/app/data.",
    )
    exclude = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        label="Exclude (optional)",
        help_text="Glob patterns to skip, one per line, e.g. *.tmp.",
    )
    database = forms.CharField(
        required=False,
        max_length=63,
        label="Database name",
        help_text="Letters, digits, _, $ or -.",
    )
    db_host = forms.CharField(
        required=False,
        max_length=253,
        label="Database host (optional)",
        help_text="Default: the local server.",
    )
    db_port = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=65535,
        label="Port (optional)",
        help_text="Default: the standard port.",
    )
    db_user = forms.CharField(required=False, max_length=63, label="Database user (optional)")
    backup_argv = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        label="Backup command",
        help_text=(
            "One argument per line, the program (an absolute path) first. It writes the backup to "
            "standard output. Placeholders: {target}, {job_id}, {client}."
        ),
    )
    restore_argv = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        label="Restore command",
        help_text="One argument per line, program first. It reads the backup from standard input.",
    )

    policy = PolicyChoiceField(
        queryset=ProtectionPolicy.objects.none(), widget=forms.RadioSelect, empty_label=None, label="Policy"
    )
    justification = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="What the server does and why it needs this policy; helps the backup team decide.",
    )
    external_ref = forms.CharField(
        max_length=100, required=False, label="Ticket", help_text="Optional, e.g. CHG0004321."
    )

    def __init__(self, *args, application: Application, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.application = application
        self.fields["policy"].queryset = ProtectionPolicy.objects.visible_to(user).order_by("name")
        self.options: dict = {}
        self.offers_command = rules.may_request_plugin(user, Plugin.COMMAND)
        if not self.offers_command:
            self.fields["plugin"].choices = [c for c in Plugin.choices if c[0] != Plugin.COMMAND]

    def policy_decisions(self) -> list[tuple[ProtectionPolicy, rules.Decision]]:
        """Every policy on offer with its approval rule, for the hint next to the choice."""
        return [(p, rules.client_decision(policy=p)) for p in self.fields["policy"].queryset]

    @property
    def incremental_policies(self) -> bool:
        """Whether a policy on offer takes incrementals: then the form says database dumps do not."""
        return any(policy.takes_incrementals for policy in self.fields["policy"].queryset)

    def clean_hostname(self) -> str:
        return self.cleaned_data["hostname"].lower()

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if BackupClient.objects.filter(application=self.application, name=name).exists():
            raise ValidationError(f"{self.application.name} already has a client named {name}.")
        open_request = ClientRequest.objects.filter(
            application=self.application,
            name=name,
            status__in=(RequestStatus.SUBMITTED, RequestStatus.APPROVED),
        )
        if open_request.exists():
            raise ValidationError(f"A request for a client named {name} is already open.")
        return name

    def clean(self):
        cleaned = super().clean()
        plugin = cleaned.get("plugin")
        if plugin not in self.PLUGIN_FIELDS:
            return cleaned
        for field, message in self.REQUIRED[plugin].items():
            if not self.has_error(field) and not (cleaned.get(field) or "").strip():
                self.add_error(field, message)
        if not any(self.has_error(field) for field in self.PLUGIN_FIELDS[plugin]):
            self.options = self._options(plugin, cleaned)
            try:
                validate_options(plugin, self.options)
            except ValidationError as exc:
                apply_errors(self, exc.message_dict, self.OPTION_FIELDS)
        return cleaned

    @staticmethod
    def _options(plugin: str, cleaned: dict) -> dict:
        if plugin == Plugin.FILES:
            options = {"paths": _lines(cleaned.get("paths"))}
            if exclude := _lines(cleaned.get("exclude")):
                options["exclude"] = exclude
            return options
        if plugin in DATABASE_PLUGINS:
            options = {"database": (cleaned.get("database") or "").strip()}
            for key, field in (("host", "db_host"), ("user", "db_user")):
                if value := (cleaned.get(field) or "").strip():
                    options[key] = value
            if cleaned.get("db_port") is not None:
                options["port"] = cleaned["db_port"]
            return options
        return {
            "backup_argv": _lines(cleaned.get("backup_argv")),
            "restore_argv": _lines(cleaned.get("restore_argv")),
        }


# --- Listing requests ----------------------------------------------------------------------


class RequestFilterForm(forms.Form):
    OPEN = "open"

    status = forms.ChoiceField(
        required=False,
        choices=[("", "Any status"), (OPEN, "Open (submitted, approved, running)")]
        + list(RequestStatus.choices),
    )
    kind = forms.ChoiceField(
        required=False, choices=[("", "Both kinds"), ("client", "New clients"), ("restore", "Restores")]
    )
    application = forms.SlugField(required=False, widget=forms.HiddenInput)


class RetireForm(forms.Form):
    """Retire a client: why, and the server's name typed again, so nobody retires the wrong one."""

    justification = forms.CharField(
        label="Why is this client retired?",
        max_length=10_000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="The backup team reads it when they approve, e.g. the server is decommissioned.",
        error_messages={"required": "Say why: the backup team reads it before approving."},
    )
    confirm_hostname = forms.CharField(label="Type the server's name to confirm", max_length=253)
    external_ref = forms.CharField(label="Ticket (optional)", max_length=100, required=False)

    def __init__(self, *args, client: BackupClient, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.client = client
        self.fields["confirm_hostname"].help_text = f"{client.hostname}, as on the client page."

    def clean_confirm_hostname(self) -> str:
        value = self.cleaned_data["confirm_hostname"].strip().lower()
        if value != self.client.hostname.lower():
            raise ValidationError(f"Type {self.client.hostname} to confirm which server's client you retire.")
        return value
