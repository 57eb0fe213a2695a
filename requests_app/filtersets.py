"""One FilterSet per request model, for the API's lists (an integration finds its ticket by external_ref)."""

from __future__ import annotations

import django_filters

from requests_app.choices import RequestStatus
from requests_app.models import ClientRequest, RestoreRequest


class RestoreRequestFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RequestStatus.choices)
    external_ref = django_filters.CharFilter(max_length=100)
    application = django_filters.CharFilter(field_name="backup__client__application__slug", max_length=64)

    class Meta:
        model = RestoreRequest
        fields = ["status", "external_ref", "application"]


class ClientRequestFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RequestStatus.choices)
    external_ref = django_filters.CharFilter(max_length=100)
    application = django_filters.CharFilter(field_name="application__slug", max_length=64)

    class Meta:
        model = ClientRequest
        fields = ["status", "external_ref", "application"]
