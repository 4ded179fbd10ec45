from __future__ import annotations

from django.urls import path

from keyviz.consumers import StreamConsumer

websocket_urlpatterns = [
    path("api/stream", StreamConsumer.as_asgi()),
]
