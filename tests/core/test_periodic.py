"""The one periodic list: importable task functions in each app's tasks.py, registered with django-q2
(``sync_schedules``, which also removes the project's stale schedules and nobody else's) and Celery beat."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from core.periodic import PERIODIC_TASKS, project_packages


def sync() -> None:
    call_command("sync_schedules", stdout=io.StringIO())


def test_every_periodic_task_names_an_importable_function_and_a_valid_cron():
    from croniter import croniter
    from django.utils.module_loading import import_string

    for task in PERIODIC_TASKS:
        assert callable(import_string(task.func)), task.func
        assert croniter.is_valid(task.cron), task.cron


def test_every_periodic_task_lives_in_its_apps_tasks_module():
    for task in PERIODIC_TASKS:
        app, module, _ = task.func.split(".")
        assert module == "tasks", task.func
        assert app in project_packages(), task.func


def test_the_project_packages_are_its_own_apps_and_nothing_installed():
    packages = project_packages()

    assert {"portal", "core", "catalog", "requests_app", "reports"} <= packages
    assert not packages & {"django", "django_q", "rest_framework", "axes", "drf_spectacular"}


def test_celery_beat_runs_the_same_periodic_list():
    from portal.celery import app

    app.loader.import_default_modules()
    app.finalize()
    beat = app.conf.beat_schedule
    for task in PERIODIC_TASKS:
        entry = beat[task.name]
        assert entry["task"] == "portal.run_task"
        assert entry["args"][0] == task.func


@pytest.mark.django_db
def test_sync_schedules_registers_every_periodic_task_idempotently():
    sync()
    sync()

    assert sorted(Schedule.objects.values_list("func", flat=True)) == sorted(t.func for t in PERIODIC_TASKS)


@pytest.mark.django_db
def test_sync_schedules_points_a_listed_schedule_at_its_task_function_where_it_moved():
    Schedule.objects.create(
        name="Retry due webhook deliveries",
        func="requests_app.webhooks.delivery.retry_due",  # where it was before each app had one tasks.py
        schedule_type=Schedule.CRON,
        cron="* * * * *",
    )

    sync()

    (moved,) = Schedule.objects.filter(name="Retry due webhook deliveries")
    assert moved.func == "requests_app.tasks.retry_webhook_deliveries"


@pytest.mark.django_db
def test_sync_schedules_removes_a_renamed_task_of_any_app_and_keeps_schedules_added_by_hand():
    renamed = Schedule.objects.create(
        name="Generate the monthly reports",  # since renamed in the list, function and all
        func="reports.tasks.generate_reports",
        schedule_type=Schedule.CRON,
        cron="0 5 1 * *",
    )
    by_hand = Schedule.objects.create(
        name="Clear expired sessions",
        func="django.core.management.call_command",
        args="'clearsessions'",
        schedule_type=Schedule.DAILY,
    )

    sync()

    assert not Schedule.objects.filter(pk=renamed.pk).exists()
    assert Schedule.objects.get(pk=by_hand.pk).func == "django.core.management.call_command"
    assert Schedule.objects.count() == len(PERIODIC_TASKS) + 1
