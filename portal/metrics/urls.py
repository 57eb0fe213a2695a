"""``/metrics`` (included from portal/urls.py)."""

from django.urls import path

from portal.metrics import views

urlpatterns = [path("", views.metrics, name="metrics")]
