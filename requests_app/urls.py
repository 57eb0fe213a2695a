"""The owners' request pages and their small JSON endpoints."""

from django.urls import path

from requests_app import views
from requests_app.channels import views as channels

app_name = "requests"

urlpatterns = [
    path("backups/<int:pk>/restore/", views.restore_form, name="restore"),
    path("backups/<int:pk>/restore/decision", views.restore_decision, name="restore-decision"),
    path("applications/<slug:slug>/protect/", views.protect_form, name="protect"),
    path("clients/<int:pk>/retire/", views.retire_form, name="retire"),
    path("applications/<slug:slug>/notifications/", channels.channels, name="channels"),
    path(
        "applications/<slug:slug>/notifications/<int:pk>/remove",
        channels.channel_delete,
        name="channel-delete",
    ),
    path("applications/<slug:slug>/notifications/<int:pk>/test", channels.channel_test, name="channel-test"),
    path("requests/", views.request_list, name="list"),
    path("requests/client/<int:pk>/", views.client_request_detail, name="client-request"),
    path("requests/client/<int:pk>/enrol/", views.issue_enrolment, name="issue-enrolment"),
    path("requests/restore/<int:pk>/", views.restore_request_detail, name="restore-request"),
    path("requests/restore/<int:pk>/progress.json", views.restore_progress, name="restore-progress"),
    path("requests/<str:kind>/<int:pk>/cancel/", views.cancel_request, name="cancel"),
]
