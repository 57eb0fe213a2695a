"""Root URLs."""

from django.contrib import admin
from django.urls import include, path

from portal import views

admin.site.site_header = "Backup Portal"
admin.site.site_title = "Backup Portal"
admin.site.index_title = "Backup team"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/agent/v1/", include("catalog.api.urls")),
    path("", views.home, name="home"),
]
