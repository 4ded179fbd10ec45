"""The auditors' pages (url names ``audit`` and ``audit-*``)."""

from __future__ import annotations

from django.urls import path

from audit import views

urlpatterns = [
    path("audit/", views.event_list, name="audit"),
    path("audit/export/", views.export, name="audit-export"),
    path("audit/<int:seq>/", views.event_detail, name="audit-event"),
]
