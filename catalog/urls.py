"""The owners' catalog pages."""

from django.urls import path

from catalog import views

app_name = "catalog"

urlpatterns = [
    path("applications/<slug:slug>/", views.application_detail, name="application"),
    path("clients/<int:pk>/", views.client_detail, name="client"),
    path("clients/<int:client_id>/files/", views.search_files, name="search"),
    path(
        "clients/<int:client_id>/backups/<int:backup_id>/acknowledge-anomaly/",
        views.acknowledge_anomaly,
        name="acknowledge-anomaly",
    ),
    path("clients/<int:client_id>/backups/<int:backup_id>/files/", views.browse_files, name="browse"),
]
