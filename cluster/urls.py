from __future__ import annotations

from django.urls import path

from cluster import views

app_name = "cluster"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("nodes/", views.nodes, name="nodes"),
    path("nodes/<str:node>/", views.node, name="node"),
    path("raft/", views.raft, name="raft"),
    path("routes/", views.routes, name="routes"),
    path("adapters/", views.adapters, name="adapters"),
    path("api/cluster/overview", views.api_overview, name="api-overview"),
    path("api/nodes", views.api_nodes, name="api-nodes"),
    path("api/nodes/<str:node>", views.api_node, name="api-node"),
    path("api/raft/groups", views.api_raft_groups, name="api-raft-groups"),
    path("api/routes", views.api_routes, name="api-routes"),
    path("api/adapters/summary", views.api_adapters, name="api-adapters"),
]
