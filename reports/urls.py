"""The reports page and downloads."""

from django.urls import path

from reports import views

app_name = "reports"

urlpatterns = [
    path("reports/", views.report_list, name="report-list"),
    path("reports/<int:pk>/download", views.download, name="download"),
]
