from __future__ import annotations

from django.conf import settings
from django.urls import include, path

from elastickv_admin import health
from elastickv_admin.lib import metrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("", include("cluster.urls")),
    path("", include("keyviz.urls")),
    path("", include("accounts.urls")),
    path("", include("accounts.settings_urls")),
    path("", include("cluster.node_token_urls")),
    path("", include("audit.urls")),
]
# The Demo cluster card exists only while `elastickv-admin demo` runs (never under serve).
if settings.DEMO:
    urlpatterns.append(path("", include("demo.urls")))

handler400 = "elastickv_admin.views.bad_request"
handler403 = "elastickv_admin.views.permission_denied"
handler404 = "elastickv_admin.views.page_not_found"
handler500 = "elastickv_admin.views.server_error"
