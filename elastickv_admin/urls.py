from __future__ import annotations

from django.urls import include, path

from elastickv_admin import health, metrics, views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("", include("cluster.urls")),
    path("", include("keyviz.urls")),
    path("audit/", views.not_built, {"room": "Audit log"}, name="audit"),
    path("settings/", views.not_built, {"room": "Settings"}, name="settings"),
]

handler400 = "elastickv_admin.views.bad_request"
handler404 = "elastickv_admin.views.page_not_found"
handler500 = "elastickv_admin.views.server_error"
