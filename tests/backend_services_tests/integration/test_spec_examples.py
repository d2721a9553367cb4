"""The specification's usage examples run unchanged, as whole programs.

Each example is the spec's code, verbatim, wrapped in ``asyncio.run`` and run in a fresh
interpreter. The examples name ``redis://localhost:6379`` and never call ``shutdown()``:
with no server there, each component must start on memory (never hang, never crash) and
the program must still exit cleanly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.backend_services_tests.spec_examples import (
    CIRCUIT_BREAKER,
    CONFIGURATION,
    DEGRADATION,
    DISCOVERY,
)

# The spec's JSON configuration example, verbatim.
SPEC_JSON = {
    "service_discovery": {
        "redis_url": "redis://localhost:6379",
        "health_check_interval": 30,
        "service_ttl": 300,
    },
    "circuit_breaker": {
        "default_failure_threshold": 5,
        "default_timeout": 60,
        "slow_call_threshold": 5.0,
    },
    "degradation": {
        "check_interval": 30,
        "recovery_delay": 60,
        "thresholds": {
            "cpu": {"partial": 0.7, "minimal": 0.8, "emergency": 0.9},
            "memory": {"partial": 0.75, "minimal": 0.85, "emergency": 0.9},
        },
    },
}

# What the examples leave undefined (the user's own functions), and a report of the
# example's results printed as one JSON line for the test to check.
PRELUDE = """
import asyncio, json

data = [0.1, 0.2, 0.3]

async def external_service_call():
    return "external-ok"

async def membrane_processing(data):
    return {"processed": len(data)}

async def advanced_processing(data):
    return "advanced"

async def basic_processing(data):
    return "basic"
"""


def _program(example: str, report: str) -> str:
    body = textwrap.indent(textwrap.dedent(example), "    ")
    return (
        PRELUDE
        + "\nasync def main():\n"
        + body
        + f"\n    print(json.dumps({report}, default=str))\n"
        + "\nasyncio.run(main())\n"
    )


def _run(program: str, cwd: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    report: dict[str, object] = json.loads(last)
    return report


@pytest.mark.slow
def test_discovery_example_runs_and_exits(tmp_path: Path) -> None:
    """Registering at an unreachable Redis works on memory; nothing healthy is listed yet."""
    report = _run(
        _program(
            DISCOVERY,
            "{'services': [s.service_id for s in services], "
            "'registered': list(discovery.services)}",
        ),
        tmp_path,
    )
    assert report["registered"] == ["dtesn-memory-1"]
    assert report["services"] == []  # no server on port 8081 passed a health check


@pytest.mark.slow
def test_circuit_breaker_example_runs_and_exits(tmp_path: Path) -> None:
    """The guarded call runs and the decorated function returns its result."""
    report = _run(
        _program(
            CIRCUIT_BREAKER,
            "{'result': result, 'decorated': await process_membrane([1, 2]), "
            "'state': cb.get_metrics()['circuit_state'], "
            "'calls': cb.get_metrics()['total_calls']}",
        ),
        tmp_path,
    )
    assert report == {
        "result": "external-ok",
        "decorated": {"processed": 2},
        "state": "closed",
        "calls": 1,
    }


@pytest.mark.slow
def test_degradation_example_runs_and_exits(tmp_path: Path) -> None:
    """The HIGH-priority feature decides the path: advanced unless the machine's real
    load has put the service at EMERGENCY or worse."""
    report = _run(
        _program(DEGRADATION, "{'result': result, 'level': manager.current_level.value}"),
        tmp_path,
    )
    high_enabled = report["level"] in ("normal", "partial", "minimal")
    assert report["result"] == ("advanced" if high_enabled else "basic")


@pytest.mark.slow
@pytest.mark.parametrize("with_file", [False, True], ids=["no-config-file", "spec-json-file"])
def test_configuration_example_runs_and_exits(tmp_path: Path, with_file: bool) -> None:
    """Set, get, snapshot and roll back work with or without the spec's config.json."""
    if with_file:
        (tmp_path / "config.json").write_text(json.dumps(SPEC_JSON))
    report = _run(
        _program(
            CONFIGURATION,
            "{'depth': depth, 'after_rollback': await config.get_config('membrane_depth'), "
            "'timeout': await config.get_config('processing_timeout'), "
            "'version_id': version_id}",
        ),
        tmp_path,
    )
    assert report["depth"] == 6
    assert report["after_rollback"] == 6
    assert report["timeout"] == 30.0
    assert isinstance(report["version_id"], str)
    assert report["version_id"]
