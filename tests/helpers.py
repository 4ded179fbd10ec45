"""Small helpers shared by test modules."""

from __future__ import annotations

import pytest


def require(condition: bool, reason: str) -> None:
    """Skip when a tier's prerequisite is missing (CI turns the skip into a failure)."""
    if not condition:
        pytest.skip(reason)
