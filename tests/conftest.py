"""Test-wide setup: a clean environment, a Hypothesis profile for CI."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _clean_dtesn_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees DTESN_* variables it did not set itself."""
    for name in list(os.environ):
        if name.startswith("DTESN_"):
            monkeypatch.delenv(name, raising=False)
    return
