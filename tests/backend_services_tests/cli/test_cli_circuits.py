"""``backend-services circuits``: breakers forced open, closed and reset fleet-wide."""

from __future__ import annotations

import pytest

from .test_cli import run_json


class TestCircuits:
    def test_open_close_reset_a_circuit_fleet_wide(
        self, capsys: pytest.CaptureFixture[str], redis_url: str
    ):
        """open forces the shared state open; close and reset bring it back; list shows it."""
        url = redis_url
        opened = run_json(capsys, url, "circuits", "open", "payments", "--duration", "30")
        assert isinstance(opened, dict)
        assert opened["state"] == "forced_open"
        listed = run_json(capsys, url, "circuits", "list")
        assert isinstance(listed, list)
        assert [(c["name"], c["state"]) for c in listed] == [("payments", "forced_open")]
        closed = run_json(capsys, url, "circuits", "close", "payments")
        assert isinstance(closed, dict)
        assert closed["state"] == "closed"
        run_json(capsys, url, "circuits", "open", "payments")
        reset = run_json(capsys, url, "circuits", "reset", "payments")
        assert isinstance(reset, dict)
        assert reset["state"] == "closed"
        assert reset["version"] > closed["version"]
