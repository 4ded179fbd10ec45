from __future__ import annotations

from django.urls import path

from demo import views

app_name = "demo"

urlpatterns = [
    path("demo/", views.card, name="card"),
    path("demo/control", views.control, name="control"),
]
