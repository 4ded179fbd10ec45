from __future__ import annotations

from django.urls import path

from cluster import views

app_name = "cluster"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("nodes/", views.nodes, name="nodes"),
    path("raft/", views.raft, name="raft"),
    path("routes/", views.routes, name="routes"),
    path("adapters/", views.adapters, name="adapters"),
]
