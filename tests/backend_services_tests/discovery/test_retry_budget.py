"""The retry budget bounds retries to a share of requests plus a small reserve."""

from __future__ import annotations

import pytest

from backend_services.errors import ValidationError
from backend_services.retry_budget import RetryBudget


def test_reserve_allows_retries_when_quiet() -> None:
    """min_per_second x window retries are allowed without any requests."""
    budget = RetryBudget(0.1, min_per_second=1, window=5)
    assert sum(budget.try_retry(0.0) for _ in range(10)) == 5


def test_retries_are_a_share_of_requests() -> None:
    """With no reserve, 1000 requests at ratio 0.2 allow 200 retries."""
    budget = RetryBudget(0.2, min_per_second=0, window=10)
    for _ in range(1000):
        budget.record_request(1.0)
    assert sum(budget.try_retry(1.5) for _ in range(500)) == 200


def test_old_requests_expire() -> None:
    """Deposits older than the window no longer fund retries."""
    budget = RetryBudget(1.0, min_per_second=0, window=2)
    for _ in range(10):
        budget.record_request(0.0)
    assert budget.balance(1.0) == 10
    assert budget.balance(2.5) == 0
    assert not budget.try_retry(2.5)


def test_validation() -> None:
    """Bad settings raise naming the field."""
    with pytest.raises(ValidationError, match="ratio"):
        RetryBudget(-1)
    with pytest.raises(ValidationError, match="window"):
        RetryBudget(window=0.5)
