"""What the configuration manager reports: its summary (secrets redacted), its metrics
and its audit log (fleet versions and local reloads)."""

from __future__ import annotations

from typing import Any

from ..config.model import REDACTED, UNREADABLE
from ..log import mask_secrets
from .config_state import ConfigState

__all__ = ["ConfigReport"]


class ConfigReport(ConfigState):
    """``get_config_summary``, ``get_metrics`` and ``get_audit_log``."""

    async def get_config_summary(self) -> dict[str, Any]:
        """Everything about the configuration fit to show or log (secrets redacted)."""
        sources: dict[str, int] = {}
        for key in self._values:
            src = self._layers.source_of(key)
            name = "unset" if src is None else src.value
            sources[name] = sources.get(name, 0) + 1
        head = self._history.head
        return {
            "service_name": self.service_name,
            "version": self._history.version,
            "version_id": None if head is None else head.id,
            "last_change": None if head is None else head.as_dict(),
            "total_keys": len(self._values),
            "sources": sources,
            "secret_keys": sum(1 for k in self._values if self._layers.is_secret(k)),
            "config": {
                k: mask_secrets(
                    REDACTED if self._layers.is_secret(k) else (None if v is UNREADABLE else v), k
                )
                for k, v in sorted(self._values.items())
            },
            "versions_retained": len(self._history.records()),
            "max_versions": self._history.max_versions,
            "file": {
                "path": None if self.config_file is None else str(self.config_file),
                "loaded_from": self._file_source,
                "sha256": self._file_sha,
                "watching": self.auto_reload and self.config_file is not None,
            },
            "last_known_good": None
            if self.last_known_good_path is None
            else str(self.last_known_good_path),
            "store": None if self._fleet is None else self._fleet.status(),
            "encryption_keys": self._policy.box.key_ids,
            "validators": self._validators.count(),
            "held_back": self._quarantine.report(),
            "callbacks": len(self._dispatch),
            "metrics": dict(self.metrics),
            "state": self._state,
        }

    def get_metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.metrics)
        out.update(
            callback_errors=self._dispatch.errors,
            version=self._history.version,
            total_keys=len(self._values),
            versions_retained=len(self._history.records()),
            held_back=len(self._quarantine),
        )
        if self._fleet is not None:
            out.update({f"store_{k}": v for k, v in self._fleet.status().items()})
        return out

    async def get_audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Fleet versions and local file/environment reloads, oldest first."""
        items: list[tuple[float, dict[str, Any]]] = [
            (m.created_at, m.as_dict()) for m in self._history.versions()
        ]
        items += [(c.at, c.as_dict()) for c in self._audit]
        items.sort(key=lambda pair: pair[0])
        out = [d for _, d in items]
        return out if limit is None else out[max(0, len(out) - limit) :]
