"""The URLconf as `elastickv-admin demo` builds it (ELASTICKV_ADMIN_DEMO on: the Demo
cluster card included), for tests that run with the demo setting."""

from django.urls import include, path

from elastickv_admin.urls import handler400, handler404, handler500
from elastickv_admin.urls import urlpatterns as serve_urls

urlpatterns = [*serve_urls, path("", include("demo.urls"))]

__all__ = ["handler400", "handler404", "handler500", "urlpatterns"]
