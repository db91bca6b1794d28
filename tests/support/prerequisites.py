"""A missing prerequisite (a tool, a runtime): a skip outside CI, a failure in CI."""
from __future__ import annotations

import os

import pytest


def unavailable(reason: str) -> None:
    """Skip outside CI; in CI (CI=true) a missing prerequisite is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)
