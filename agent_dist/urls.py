"""/agent/: what a new server downloads (agent_dist/views.py)."""

from django.urls import path

from agent_dist import views

app_name = "agent-dist"

urlpatterns = [
    path("install.sh", views.install_sh, name="install-sh"),
    path("backup-agent.pyz", views.zipapp, name="pyz"),
    path("backup-agent.pyz.sha256", views.zipapp_sha256, name="pyz-sha256"),
    path("backup-agent.deb", views.deb_latest, name="deb-latest"),
    path("backup-agent.deb.sha256", views.deb_sha256, name="deb-sha256"),
    path("backup-agent_<str:version>_all.deb", views.deb, name="deb"),
]
