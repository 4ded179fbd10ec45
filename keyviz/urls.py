from __future__ import annotations

from django.urls import path

from keyviz import views

app_name = "keyviz"

urlpatterns = [
    path("keyviz/", views.heatmap, name="heatmap"),
    path("keyviz/hot/", views.hot_ranges, name="hot-ranges"),
    path("api/keyviz/hot-ranges", views.api_hot_ranges, name="api-hot-ranges"),
    path("events/", views.events_page, name="events"),
    path("api/events", views.api_events, name="api-events"),
    path("api/keyviz/matrix", views.api_matrix, name="api-matrix"),
    path("api/keyviz/buckets/<path:bucket_id>", views.api_bucket, name="api-bucket"),
]
