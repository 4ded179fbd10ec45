"""The base of our middlewares that run natively in both modes.

Under ASGI Django calls ``__acall__`` with no thread switch; the test client and
management paths still work through the sync ``handle``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse


class HybridMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]
    ) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return self.handle(request)

    def handle(self, request: HttpRequest) -> Any:
        raise NotImplementedError

    async def __acall__(self, request: HttpRequest) -> Any:
        raise NotImplementedError
