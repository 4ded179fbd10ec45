from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("cluster.urls")),
    path("", include("keyviz.urls")),
    path("", include("accounts.urls")),
    path("", include("accounts.settings_urls")),
    path("", include("audit.urls")),
]

handler400 = "elastickv_admin.views.bad_request"
handler404 = "elastickv_admin.views.page_not_found"
handler500 = "elastickv_admin.views.server_error"
