from django.urls import path

from catalog.agent_api import views

app_name = "agent-api"

urlpatterns = [
    path("enrol", views.EnrolView.as_view(), name="enrol"),
    path("poll", views.poll, name="poll"),
    path("jobs/<int:job_id>/progress", views.ProgressView.as_view(), name="progress"),
    path("jobs/<int:job_id>/index", views.IndexUploadView.as_view(), name="index"),
    path("jobs/<int:job_id>/complete", views.CompleteView.as_view(), name="complete"),
]
