from __future__ import annotations

from django.urls import path

from keyviz import views

app_name = "keyviz"

urlpatterns = [
    path("keyviz/", views.heatmap, name="heatmap"),
]
