"""Root URLs."""

from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import include, path

from portal import auth, dashboard, views

admin.site.site_header = "Backup Portal"
admin.site.site_title = "Backup Portal"
admin.site.index_title = "Backup team"
# The admin's sign-in is throttled like the portal's: one door must not bypass the other.
admin.site.login_form = auth.ThrottledAdminAuthenticationForm

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/agent/v1/", include("catalog.api.urls")),
    path("accounts/login/", auth.PortalLoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("", include("catalog.urls")),
    path("", include("requests_app.urls")),
    path("", dashboard.dashboard, name="home"),
]
