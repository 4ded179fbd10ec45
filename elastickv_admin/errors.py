"""The one error envelope of the JSON API: ``{"code": <int>, "message": "..."}``.

The code is the HTTP status; the message says what to fix.
"""

from __future__ import annotations

from django.http import JsonResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JsonResponse:
    return JsonResponse({"code": status, "message": message}, status=status)
