"""What the HTTP control API needs from the fleet, as JSON-ready data.

:class:`ControlBackend` is the contract between the HTTP layer (:mod:`.server`) and the
service layer shared with the command-line tool. Every method returns plain JSON data
(dicts, lists, strings, numbers); ``None`` means "no such item" (a 404). Invalid input
raises :class:`~backend_services.errors.ValidationError` (a 422).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from ..observability.metrics import MetricFamily

__all__ = ["ControlBackend"]

JsonObj = dict[str, Any]


class ControlBackend(Protocol):
    """The fleet as the control API sees it."""

    config_service: str
    """The configuration service the API reads and changes by default."""

    async def list_services(
        self, service_type: str | None = None, status: str | None = None
    ) -> list[JsonObj]: ...

    async def get_service(self, service_id: str) -> JsonObj | None: ...

    async def list_circuits(self) -> list[JsonObj]: ...

    async def get_circuit(self, name: str) -> JsonObj | None: ...

    async def circuit_action(
        self, name: str, action: str, reason: str = "", *, duration: float | None = None
    ) -> JsonObj | None:
        """``action`` is ``open`` (for ``duration`` s, or until closed), ``close`` or
        ``reset``."""
        ...

    async def list_degradation(self) -> list[JsonObj]: ...

    async def get_degradation(self, service: str) -> JsonObj | None: ...

    async def force_degradation(
        self, service: str, level: str, reason: str, duration: float | None
    ) -> JsonObj | None:
        """Force ``level`` (the service layer decides which ``service`` names it accepts,
        e.g. ``"fleet"`` for every manager)."""
        ...

    async def clear_degradation(self, service: str, reason: str) -> JsonObj | None: ...

    async def get_config(self, service: str) -> JsonObj: ...

    async def get_config_value(self, service: str, key: str) -> JsonObj | None: ...

    async def set_config_value(
        self, service: str, key: str, value: Any, description: str
    ) -> JsonObj: ...

    async def list_config_versions(self, service: str, limit: int | None) -> list[JsonObj]: ...

    async def snapshot_config(self, service: str, description: str) -> JsonObj: ...

    async def diff_config(self, service: str, old: str, new: str) -> JsonObj | None: ...

    async def rollback_config(
        self, service: str, version: str, description: str
    ) -> JsonObj | None: ...

    def metric_families(self) -> Iterable[MetricFamily]:
        """The components' metrics, built now (called at scrape time)."""
        ...
