"""Settings -> Node token (url names ``settings-node-token*``: admins, accounts/policy.py)."""

from __future__ import annotations

from django.urls import path

from cluster import node_token_views

urlpatterns = [
    path("settings/node-token/", node_token_views.page, name="settings-node-token"),
    path("settings/node-token/start/", node_token_views.start, name="settings-node-token-start"),
    path("settings/node-token/finish/", node_token_views.finish, name="settings-node-token-finish"),
    path("settings/node-token/cancel/", node_token_views.cancel, name="settings-node-token-cancel"),
]
