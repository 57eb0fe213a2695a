"""The idle-poll benchmark's URLs: the portal's, plus a bare Django JSON view (bench/poll.py)."""

from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from portal.urls import urlpatterns as portal_urlpatterns


@csrf_exempt  # as the agent API's views are: the benchmark posts the poll's own request to it
def bare(request):
    """The least a Django view can do: answer the idle poll's answer, touching nothing."""
    return JsonResponse({"jobs": [], "poll_after": 30})


urlpatterns = [path("bench/bare", bare), *portal_urlpatterns]
