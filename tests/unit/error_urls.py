"""The portal's URLconf and error handlers, plus two auditor pages that fail on purpose."""

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import path

from elastickv_admin.urls import handler400, handler403, handler404, handler500
from elastickv_admin.urls import urlpatterns as portal_urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]

SECRET = "s3cr3t-detail-in-the-exception"


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(SECRET)


def refuse(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied(SECRET)


# "audit-*" in accounts/policy.py: an auditor may open them.
urlpatterns = [
    *portal_urlpatterns,
    path("audit-boom/", boom, name="audit-test-boom"),
    path("audit-refuse/", refuse, name="audit-test-refuse"),
    path("api/audit-boom", boom, name="audit-test-api-boom"),
]
