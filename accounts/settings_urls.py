"""The admins' Settings pages (url names ``settings`` and ``settings-*``)."""

from __future__ import annotations

from django.urls import path

from accounts import settings_views

urlpatterns = [
    path("settings/", settings_views.settings_home, name="settings"),
    path("settings/users/new/", settings_views.user_create, name="settings-user-create"),
    path("settings/users/<int:user_id>/", settings_views.user_detail, name="settings-user"),
    path("settings/site/", settings_views.site_update, name="settings-site"),
    path(
        "settings/lockouts/unlock/", settings_views.lockout_unlock, name="settings-lockout-unlock"
    ),
]
