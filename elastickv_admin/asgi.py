"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "elastickv_admin.settings")

from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models or consumers.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddleware  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import CookieMiddleware, SessionMiddleware  # noqa: E402

from accounts.ws import WebSocketAccessMiddleware  # noqa: E402
from elastickv_admin.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Session user, then the Origin (scheme, host and port, as Django's CSRF check), the
        # access policy and its periodic re-check, the subscribe audit (accounts/ws.py).
        "websocket": CookieMiddleware(
            SessionMiddleware(
                AuthMiddleware(WebSocketAccessMiddleware(URLRouter(websocket_urlpatterns)))
            )
        ),
    }
)
