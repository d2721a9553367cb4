"""What a degradation manager reports: its level history, status and metrics as plain
data, and the record it publishes for the fleet.

Part of :class:`~backend_services.infrastructure.service_degradation.ServiceDegradationManager`;
the state it reads is
:class:`~backend_services.infrastructure.degradation_state.DegradationState`.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from ..degradation.fleet import InstanceRecord
from ..degradation.gating import ALLOWED_PRIORITIES
from ..degradation.levels import FeaturePriority
from ..errors import ValidationError
from .degradation_state import DegradationState

__all__ = ["StatusReports"]


class StatusReports(DegradationState):
    """History, status, metrics and the published fleet record."""

    # -- status ----------------------------------------------------------------------------
    def get_degradation_history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Level changes as dicts, oldest first; ``limit=N`` gives the newest N."""
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise ValidationError("limit", limit, "None or an integer >= 0")
        events = list(self._history)
        if limit is not None:
            events = events[len(events) - limit :] if limit else []
        return [e.to_dict() for e in events]

    def get_status(self) -> dict[str, Any]:
        """Everything about the manager's state, as plain data."""
        now = self._clock.monotonic()
        ov = self._policy.override
        return {
            "service_name": self.service_name,
            "instance_id": self.instance_id,
            "current_level": self.current_level.value,
            "automatic_level": self._policy.auto_level.value,
            "reason": self._reason,
            "forced": ov is not None,
            "override": None
            if ov is None
            else {
                "level": ov.level.value,
                "reason": ov.reason,
                "source": ov.source,
                "remaining": None if ov.until is None else max(0.0, ov.until - now),
            },
            "fleet_floor": self.fleet_floor.value if self.fleet_floor else None,
            "follow_fleet_floor": self._policy.follow_floor,
            "recovery_in": self._policy.next_improvement_in(now),
            "resources": {r.value: v for r, v in self._resources.items()},
            "dependency_levels": {
                r.value: lv.value for r, lv in self._policy.dependency_levels.items()
            },
            "features": {
                name: {
                    "priority": f.priority.value,
                    "enabled": self._table.get(name, False),
                    "switched_on": f.enabled,
                    "resource_dependencies": [r.value for r in f.resource_dependencies],
                }
                for name, f in self._gate.features.items()
            },
            "allowed_priorities": sorted(
                (p.value for p in ALLOWED_PRIORITIES[self.current_level]),
                key=lambda v: FeaturePriority(v).rank,
            ),
            "thresholds": {r.value: t.as_dict() for r, t in self.resource_thresholds.items()},
            "monitors": {
                "builtin": [r.value for r in self._sampler.builtin_types()],
                "user": [r.value for r in self._sampler.monitors],
                "errors": dict(self._sampler.errors),
                "last_errors": dict(self._sampler.last_errors),
            },
            "check_interval": self.check_interval,
            "recovery_delay": self.recovery_delay,
            "last_check": self._last_check,
            "rounds": self._rounds,
            "running": self._started and not self._closed,
            "shared": self._store is not None,
        }

    def get_metrics(self) -> dict[str, Any]:
        """The spec's metrics (``current_level``, ``enabled_features``,
        ``disabled_features``, ``degradation_events``, ``resource_usage``) and more."""
        enabled, disabled = self._feature_counts()
        limit = self._limit
        return {
            "current_level": self.current_level.value,
            "enabled_features": enabled,
            "disabled_features": disabled,
            "degradation_events": self._events_total,
            "resource_usage": {r.value: round(v, 4) for r, v in self._resources.items()},
            "degradations": self._degradations,
            "recoveries": self._recoveries,
            "forced": self._policy.override is not None,
            "monitor_errors": sum(self._sampler.errors.values()),
            "monitoring_rounds": self._rounds,
            "shed_requests": self._admission.shed_total,
            "shed_by_priority": dict(self._admission.shed_by_priority),
            "unknown_feature_lookups": self.unknown_feature_lookups,
            "concurrency_limit": None if limit is None else int(limit.limit),
            "inflight": None if limit is None else limit.inflight,
        }

    # -- fleet -----------------------------------------------------------------------------
    def _record(self) -> InstanceRecord:
        """This manager's state as published for the fleet."""
        enabled, disabled = self._feature_counts()
        return InstanceRecord(
            service_name=self.service_name,
            instance_id=self.instance_id,
            level=self.current_level,
            forced=self._policy.override is not None,
            reason=self._reason,
            resources={r.value: v for r, v in self._resources.items()},
            enabled_features=enabled,
            disabled_features=disabled,
            updated_at=self._clock.time(),
            pid=os.getpid(),
            host=socket.gethostname(),
        )
