"""The one error envelope of the JSON API: ``{"code": <int>, "message": "..."}``.

The code is the HTTP status; the message says what to fix. The exceptions have
no Django in them, so pure service code (query parsing) can raise them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.http import JsonResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ParamError(ApiError):
    """A bad query parameter: ``param`` names it, ``message`` says what to fix."""

    def __init__(self, param: str, message: str) -> None:
        # str(exc) is the envelope's message ("rows: must be ..."); .message the bare reason.
        super().__init__(400, f"{param}: {message}")
        self.param = param
        self.message = message


def error_response(status: int, message: str) -> JsonResponse:
    from django.http import JsonResponse

    return JsonResponse({"code": status, "message": message}, status=status)
