"""Root URLs."""

from django.contrib import admin
from django.urls import include, path

from catalog import views as catalog_views
from identity import urls as identity_urls
from identity import views as identity_views
from portal import auth, views
from requests_app import views as requests_views

admin.site.site_header = "Backup Portal"
admin.site.site_title = "Backup Portal"
admin.site.index_title = "Backup team"
# The admin's sign-in shares the portal's lockout (django-axes): one door must not bypass the other.
admin.site.login_form = auth.AdminSignInForm

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", include("portal.metrics.urls")),  # Prometheus: docs/monitoring.md
    # Before admin.site.urls: a page of the admin that spans catalog and requests.
    path("admin/automation/", requests_views.automation_page, name="admin-automation"),
    path("admin/", admin.site.urls),
    path("api/agent/v1/", include("catalog.agent_api.urls")),
    path("agent/", include("agent_dist.urls")),  # the agent's downloads and install.sh
    path("api/", include("portal.api_urls")),
    path("accounts/login/", auth.PortalLoginView.as_view(), name="login"),
    path("accounts/logout/", identity_views.LogoutView.as_view(), name="logout"),
    path("oidc/", include("identity.urls")),
    path("account/mfa/", include(identity_urls.mfa_urlpatterns)),
    path("alerts/", catalog_views.alert_list, name="alerts"),
    path("alerts/<int:pk>/acknowledge/", catalog_views.acknowledge, name="alert-acknowledge"),
    path("", include("catalog.urls")),
    path("", include("requests_app.urls")),
    path("", include("reports.urls")),
    path("", requests_views.dashboard, name="home"),
]
