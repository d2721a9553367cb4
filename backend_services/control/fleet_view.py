"""The fleet as the control server sees it: the snapshot it watches, and its metrics.

:func:`fleet_snapshot` reads services, circuits, degradation levels and the configuration
in force from the backend (the watcher's source); :func:`fleet_families` turns the last
snapshot into Prometheus families, so a scrape does no I/O.
"""

from __future__ import annotations

import asyncio
from collections import Counter as _Tally
from collections.abc import Mapping
from typing import Any

from ..log import get_logger
from ..observability.metrics import MetricFamily
from .backend import ControlBackend
from .endpoints import DEGRADATION_LEVELS
from .messages import jsonable

__all__ = ["fleet_families", "fleet_snapshot"]

_log = get_logger("control")


async def fleet_snapshot(backend: ControlBackend) -> dict[str, Any]:
    """Services, circuits, degradation and the configuration (``None`` when it cannot be
    read), as JSON-able data."""
    services, circuits, degradation = await asyncio.gather(
        backend.list_services(),
        backend.list_circuits(),
        backend.list_degradation(),
    )
    service = backend.config_service
    config: dict[str, Any] | None
    try:
        state = await backend.get_config(service)
        versions = await backend.list_config_versions(service, 50)
        config = {
            "service": service,
            "version": state.get("version"),
            "version_id": state.get("version_id"),
            "versions": versions,
        }
    except Exception as exc:
        _log.warning("config_snapshot_failed", service=service, error=repr(exc))
        config = None
    result: dict[str, Any] = jsonable(
        {
            "services": services,
            "circuits": circuits,
            "degradation": degradation,
            "config": config,
        }
    )
    return result


def fleet_families(snap: Mapping[str, Any]) -> list[MetricFamily]:
    """The fleet as of a snapshot (no I/O at scrape time)."""
    instances = MetricFamily(
        "backend_services_fleet_instances",
        "gauge",
        "Registered instances by type and health status, fleet-wide.",
    )
    tally: _Tally[tuple[str, str]] = _Tally(
        (str(s.get("service_type")), str(s.get("status"))) for s in snap["services"]
    )
    for (stype, status), n in sorted(tally.items()):
        instances.add(n, {"service_type": stype, "status": status})
    circuits = MetricFamily(
        "backend_services_fleet_circuit_state",
        "gauge",
        "1 for each shared circuit breaker's current state, fleet-wide.",
    )
    for c in snap["circuits"]:
        circuits.add(1, {"circuit": str(c.get("name")), "state": str(c.get("state"))})
    levels = MetricFamily(
        "backend_services_fleet_degradation_level",
        "gauge",
        "Worst degradation level per service, 0 normal .. 4 offline.",
    )
    for d in snap["degradation"]:
        level = str(d.get("level"))
        if level in DEGRADATION_LEVELS:
            levels.add(DEGRADATION_LEVELS.index(level), {"service": str(d.get("service"))})
    version = MetricFamily(
        "backend_services_fleet_config_version",
        "gauge",
        "Configuration version in force, per configuration service.",
    )
    config = snap.get("config") or {}
    if isinstance(config.get("version"), int):
        version.add(config["version"], {"service": str(config.get("service"))})
    return [instances, circuits, levels, version]
