"""The portal's URLconf plus one page nobody added to accounts/policy.py."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from elastickv_admin.urls import urlpatterns as portal_urlpatterns


def forgotten(request: HttpRequest) -> HttpResponse:
    return HttpResponse("this must never be served")


urlpatterns = [*portal_urlpatterns, path("forgotten/", forgotten, name="forgotten-page")]
