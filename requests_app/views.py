"""The owners' request pages: ask for a restore or a new client, follow and cancel requests; the dashboard.

Views are thin: look the object up through the caller's tenancy (``visible_to``;
for a request ``for_person``, which adds the user's own; anything else is a 404),
let a form check the input, call one service function, and map its domain errors
to form errors or messages.

The dashboard (the home page) and the admin's Automation page live here because
they show requests beside the catalog's protection status and alerts, and
requests_app is the app that may read both.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.db.models import CharField, OuterRef, Value
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from agent_dist import artifacts as agent_artifacts
from catalog import formatting
from catalog.choices import BackupStatus
from catalog.models import Application, Backup, BackupClient
from catalog.protection import annotate_applications, count_of
from catalog.services import anomalies, clients
from catalog.tenancy import is_backup_team
from catalog.views import describe_options, open_unacknowledged_count
from requests_app import metrics, rules, services
from requests_app.actors import Actor
from requests_app.choices import Channel, ClientAction, RequestStatus
from requests_app.enrolment import enrol_command, install_command, manual_steps
from requests_app.errors import InvalidRequest, InvalidTransition, NotPermitted
from requests_app.forms import (
    DATABASE_PLUGINS,
    ClientRequestForm,
    RequestFilterForm,
    RestoreForm,
    RetireForm,
    apply_errors,
    restore_targets,
)
from requests_app.models import ClientRequest, RestoreRequest
from requests_app.templatetags.request_tags import REQUEST_TONES

REQUESTS_PER_PAGE = 25
MY_OPEN_REQUESTS_SHOWN = 10
CANCELLABLE = (RequestStatus.SUBMITTED, RequestStatus.APPROVED)
MODELS = {"client": ClientRequest, "restore": RestoreRequest}
# What a row of the request list needs, per kind, without a query per row.
LIST_RELATED = {
    "client": ("application", "requester", "policy"),
    "restore": ("backup__client__application", "target_agent", "requester"),
}


def my_open_requests(user, *, limit: int) -> tuple[list, bool]:
    """The user's own open requests of both kinds, newest first; and whether there are more."""
    rows = []
    for kind, model in MODELS.items():
        qs = model.objects.asked_by(user).open()
        rows += qs.select_related(*LIST_RELATED[kind]).order_by("-created_at")[: limit + 1]
    rows.sort(key=lambda r: r.created_at, reverse=True)
    return rows[:limit], len(rows) > limit


def _actor(request: HttpRequest) -> Actor:
    return Actor.signed_in(request, Channel.WEB)


# --- Restore -----------------------------------------------------------------------------------


def _visible_backup(request: HttpRequest, pk: int) -> Backup:
    return get_object_or_404(
        Backup.objects.visible_to(request.user).select_related("client__application", "client__agent"), pk=pk
    )


@login_required
def restore_form(request: HttpRequest, pk: int) -> HttpResponse:
    backup = _visible_backup(request, pk)
    if backup.status != BackupStatus.AVAILABLE:
        messages.error(
            request, f"This recovery point is {backup.get_status_display().lower()}: it cannot be restored."
        )
        return redirect("catalog:client", pk=backup.client_id)
    form = RestoreForm(
        request.POST if request.method == "POST" else None,
        backup=backup,
        user=request.user,
        # From the file browser or the search: ?path=…&path=…, hidden inputs of the form from then on.
        initial={"path": request.GET.getlist("path")},
    )
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            restore = services.submit_restore(
                actor=_actor(request),
                backup=backup,
                target_agent=data["target_agent"],
                target_location=data["target_location"],
                overwrite=data["overwrite"],
                reason=data["reason"],
                external_ref=data["external_ref"],
                paths=data["path"] or None,
            )
        except InvalidRequest as exc:
            apply_errors(form, exc.errors, {"paths": "path"})
        else:
            if restore.needs_approval:
                messages.success(request, f"{restore} is submitted and waits for the backup team.")
            else:
                messages.success(request, f"{restore} is approved automatically; the restore is queued.")
            return redirect(restore)
    return render(
        request,
        "requests_app/restore_form.html",
        {
            "backup": backup,
            "client": backup.client,
            "form": form,
            "decision": form.decision(),
            "selection": form.selected_paths(),
            "database": backup.client.plugin in DATABASE_PLUGINS,
            # Suspicious, or taken after a suspicious point: say so, and where the last clean one is.
            "anomaly_warning": anomalies.restore_warning(backup),
        },
    )


@never_cache
@login_required
@require_GET
def restore_decision(request: HttpRequest, pk: int) -> JsonResponse:
    """The approval rule for a restore of this backup onto ``target_agent``, with ``overwrite`` or not."""
    backup = _visible_backup(request, pk)
    try:
        agent_id = int(request.GET.get("target_agent", ""))
    except ValueError:
        return JsonResponse({"error": "target_agent must be an agent id."}, status=400)
    agent = get_object_or_404(restore_targets(request.user), pk=agent_id)
    overwrite = request.GET.get("overwrite", "").lower() in ("1", "true", "on", "yes")
    decision = rules.restore_decision(backup=backup, target_agent=agent, overwrite=overwrite)
    return JsonResponse({"needs_approval": decision.needs_approval, "reason": decision.reason})


# --- Protect a new server -------------------------------------------------------------------------


@login_required
def protect_form(request: HttpRequest, slug: str) -> HttpResponse:
    application = get_object_or_404(Application.objects.visible_to(request.user), slug=slug)
    form = ClientRequestForm(
        request.POST if request.method == "POST" else None, application=application, user=request.user
    )
    if form.is_bound and not rules.may_request_plugin(request.user, request.POST.get("plugin", "")):
        form.is_valid()
        form.add_error(None, rules.COMMAND_IS_TEAMS)
        return _protect_page(request, application, form, status=403)
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            client_request = services.submit_client(
                actor=_actor(request),
                application=application,
                hostname=data["hostname"],
                name=data["name"],
                plugin=data["plugin"],
                options=form.options,
                policy=data["policy"],
                justification=data["justification"],
                external_ref=data["external_ref"],
            )
        except InvalidRequest as exc:
            apply_errors(form, exc.errors, ClientRequestForm.OPTION_FIELDS)
        except NotPermitted as exc:
            form.add_error(None, str(exc))
            return _protect_page(request, application, form, status=403)
        except IntegrityError:
            # Two submissions of the same name at once: the open-request constraint let one win.
            form.add_error("name", f"A request for a client named {data['name']} is already open.")
        else:
            messages.success(request, _submitted_message(client_request))
            return redirect(client_request)
    return _protect_page(request, application, form)


def _protect_page(request: HttpRequest, application, form: ClientRequestForm, *, status: int = 200):
    context = {"application": application, "form": form, "policies": form.policy_decisions()}
    return render(request, "requests_app/protect_form.html", context, status=status)


def _submitted_message(client_request: ClientRequest) -> str:
    if client_request.status == RequestStatus.PROVISIONED:
        return f"{client_request} is approved; the server's agent was already enrolled, so it is protected."
    if client_request.status == RequestStatus.APPROVED:
        return (
            f"{client_request} is approved. Get the one-time enrol command below and run it "
            f"on {client_request.hostname}."
        )
    return f"{client_request} is submitted and waits for the backup team."


# --- Retire a client ------------------------------------------------------------------------------


@login_required
def retire_form(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask to retire a client of one's application (another application's client: 404)."""
    client = get_object_or_404(
        BackupClient.objects.visible_to(request.user).select_related("application", "agent", "policy"), pk=pk
    )
    open_request = ClientRequest.objects.open().filter(action=ClientAction.RETIRE, client=client).first()
    if open_request is not None:
        messages.info(request, f"{open_request} is already open.")
        return redirect(open_request)
    if why := services.retire_refusal(client):
        messages.error(request, why)
        return redirect("catalog:client", pk=client.pk)
    form = RetireForm(request.POST if request.method == "POST" else None, client=client)
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            retire_request = services.submit_retire(
                actor=_actor(request),
                client=client,
                justification=data["justification"],
                external_ref=data["external_ref"],
            )
        except InvalidRequest as exc:
            apply_errors(form, exc.errors)
        else:
            messages.success(request, f"{retire_request} is submitted and waits for the backup team.")
            return redirect(retire_request)
    context = {
        "client": client,
        "form": form,
        "decision": rules.retire_decision(client=client),
        "agent_goes": client.agent is not None
        and not clients.agent_still_needed(client.agent, besides=client),
    }
    return render(request, "requests_app/retire_form.html", context)


# --- Following requests ----------------------------------------------------------------------------


@login_required
def request_list(request: HttpRequest) -> HttpResponse:
    """Both kinds, newest first, in one paginated list: a UNION of (kind, id, created) pages the
    ids, then one query per kind loads the page's rows — four queries whatever the page."""
    form = RequestFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    kinds = [filters["kind"]] if filters.get("kind") else list(MODELS)
    keyed = []
    for kind in kinds:
        qs = MODELS[kind].objects.for_person(request.user)
        status = filters.get("status")
        if status == RequestFilterForm.OPEN:
            qs = qs.open()
        elif status:
            qs = qs.filter(status=status)
        if filters.get("application"):
            path = "application__slug" if kind == "client" else "backup__client__application__slug"
            qs = qs.filter(**{path: filters["application"]})
        keyed.append(
            qs.order_by()
            .annotate(kind=Value(kind, output_field=CharField()))
            .values_list("kind", "pk", "created_at")
        )
    union = keyed[0].union(*keyed[1:], all=True) if len(keyed) > 1 else keyed[0]
    page = Paginator(union.order_by("-created_at", "-pk"), REQUESTS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    page.object_list = _load_rows(list(page.object_list))
    return render(request, "requests_app/request_list.html", {"page": page, "filter_form": form})


def _load_rows(keys: list[tuple[str, int, object]]) -> list:
    loaded = {}
    for kind, model in MODELS.items():
        ids = [pk for key_kind, pk, _ in keys if key_kind == kind]
        if ids:
            for row in model.objects.filter(pk__in=ids).select_related(*LIST_RELATED[kind]):
                loaded[kind, row.pk] = row
    return [loaded[kind, pk] for kind, pk, _ in keys if (kind, pk) in loaded]


def _detail_context(request: HttpRequest, obj) -> dict:
    user = request.user
    return {
        "req": obj,
        "events": obj.events.all(),
        "can_cancel": obj.status in CANCELLABLE and (obj.requester_id == user.pk or is_backup_team(user)),
        "show_admin_link": is_backup_team(user) and obj.status == RequestStatus.SUBMITTED,
    }


def _visible_client_request(request: HttpRequest, pk: int) -> ClientRequest:
    return get_object_or_404(
        ClientRequest.objects.for_person(request.user).select_related(
            "application", "policy__storage_target", "requester", "decided_by", "client", "enrolment"
        ),
        pk=pk,
    )


def _client_request_page(request: HttpRequest, obj: ClientRequest, *, token: str = "") -> HttpResponse:
    context = _detail_context(request, obj)
    context["options"] = describe_options(obj.options)
    context["can_issue_enrolment"] = services.may_issue_enrolment(obj, request.user)
    context["waiting_for_rekey"] = services.waits_for_rekey(obj)
    context["enrol_command"] = enrol_command(obj, token) if token else ""
    if token:
        # The one paste (install.sh) and the manual route beside it (requests_app/_agent_install.html).
        agent = agent_artifacts.zipapp()
        context["install_command"] = install_command(obj, token)
        context["manual_steps"] = manual_steps(obj, token, agent.sha256)
        context["agent"] = agent
    return render(request, "requests_app/client_request_detail.html", context)


@login_required
def client_request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _client_request_page(request, _visible_client_request(request, pk))


@never_cache
@login_required
@require_POST
def issue_enrolment(request: HttpRequest, pk: int) -> HttpResponse:
    """A fresh one-time enrol command, in this response only (the token is stored hashed)."""
    obj = _visible_client_request(request, pk)
    try:
        obj, token = services.issue_enrolment(obj.pk, actor=_actor(request))
    except NotPermitted:
        messages.error(request, "Only the person who asked, or the backup team, can enrol this server.")
        return redirect(obj)
    except InvalidTransition as exc:
        messages.error(request, str(exc))
        return redirect(obj)
    fresh = _visible_client_request(request, obj.pk)
    return _client_request_page(request, fresh, token=token)


def _visible_restore(request: HttpRequest, pk: int) -> RestoreRequest:
    return get_object_or_404(
        RestoreRequest.objects.for_person(request.user).select_related(
            "backup__client__application", "target_agent", "requester", "decided_by", "job"
        ),
        pk=pk,
    )


@login_required
def restore_request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    obj = _visible_restore(request, pk)
    context = _detail_context(request, obj)
    context["progress"] = restore_progress_data(obj)
    return render(request, "requests_app/restore_request_detail.html", context)


def restore_progress_data(obj: RestoreRequest) -> dict:
    job = obj.job
    done = job.bytes_done if job else 0
    # Until the agent reports a total, the backup's size is the best estimate of it.
    total = (job.bytes_total if job and job.bytes_total is not None else None) or obj.backup.size_bytes
    percent = min(100, round(100 * done / total)) if total else None
    if obj.status == RequestStatus.COMPLETED:
        percent = 100
    return {
        "status": obj.status,
        "status_label": obj.get_status_display(),
        "tone": REQUEST_TONES.get(obj.status, "neutral"),
        "terminal": obj.status in RequestStatus.terminal(),
        "job_state": job.state if job else None,
        "job_state_label": job.get_state_display() if job else "not queued yet",
        "bytes_done": done,
        "bytes_total": total,
        "bytes_done_human": formatting.human_size(done),
        "bytes_total_human": formatting.human_size(total),
        "percent": percent,
        "error": obj.error,
    }


@never_cache
@login_required
@require_GET
def restore_progress(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse(restore_progress_data(_visible_restore(request, pk)))


@login_required
@require_POST
def cancel_request(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    model = MODELS.get(kind)
    if model is None:
        raise Http404
    obj = get_object_or_404(model.objects.for_person(request.user), pk=pk)
    try:
        services.cancel(model, obj.pk, actor=_actor(request))
    except NotPermitted:
        messages.error(request, "Only the person who asked, or the backup team, can cancel this request.")
    except InvalidTransition as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{obj} is cancelled.")
    return redirect(obj)


# --- The dashboard ----------------------------------------------------------------------------
# A constant number of queries however many applications, clients, jobs and backups
# there are: one annotated query for the applications (see ``catalog.protection``),
# one count of the alerts waiting for somebody, and one per request kind. The backup
# team also gets the automation panel (``requests_app.metrics``: five more queries).


@dataclass(frozen=True)
class Health:
    tone: str
    label: str


def application_health(application) -> Health:
    """In words, from the annotations: protected, RPO missed, or nothing active to protect."""
    if not application.active_clients:
        return Health("neutral", "No active clients")
    if application.rpo_breaches:
        if application.active_clients == 1:
            return Health("fail", "RPO missed")
        return Health(
            "fail", f"RPO missed on {application.rpo_breaches} of {application.active_clients} clients"
        )
    return Health("ok", "RPO met" if application.active_clients == 1 else "All clients meet RPO")


def dashboard_applications(user, now):
    client_requests = ClientRequest.objects.open().filter(application=OuterRef("pk"))
    restore_requests = RestoreRequest.objects.open().filter(backup__client__application=OuterRef("pk"))
    return annotate_applications(Application.objects.visible_to(user), now).annotate(
        open_requests=count_of(client_requests) + count_of(restore_requests)
    )


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    applications = list(dashboard_applications(request.user, now))
    for application in applications:
        application.health = application_health(application)
    summary = {
        "applications": len(applications),
        "clients": sum(a.client_count for a in applications),
        "breaches": sum(a.rpo_breaches for a in applications),
        "failures": sum(a.failures_recent for a in applications),
        "open_requests": sum(a.open_requests for a in applications),
        "alerts": open_unacknowledged_count(request.user),
    }
    mine, more = my_open_requests(request.user, limit=MY_OPEN_REQUESTS_SHOWN)
    context = {"applications": applications, "summary": summary, "my_requests": mine, "more_requests": more}
    if is_backup_team(request.user):
        context["automation"] = metrics.weekly(now=now)
    return render(request, "portal/dashboard.html", context)


# --- The admin's "Automation" page ------------------------------------------------------------


@staff_member_required
def automation_page(request: HttpRequest) -> HttpResponse:
    """The same table as the backup team's dashboard panel, inside the admin."""
    from django.contrib import admin

    if not is_backup_team(request.user):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": "Automation: what the machine did, what was left for people",
        "automation": metrics.weekly(),
    }
    return render(request, "admin/automation.html", context)
