"""Log records carry the request id, so a log line and its audit events join on one key."""

from __future__ import annotations

import logging


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from audit.context import current

        context = current()
        record.request_id = context.request_id if context else "-"
        return True
