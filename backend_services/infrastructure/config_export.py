"""Export and import of the configuration manager's runtime layer.

An export holds the runtime layer with its version and history as JSON or YAML
(secrets sealed unless revealed; document layout in
:mod:`backend_services.config.documents`); an import applies an export, or a plain
document, as one validated version through the write path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import documents as docs
from ..config.model import ChangeKind, ConfigSource, Entry
from ..config.tree import check_key
from .config_writes import ConfigWrites

__all__ = ["ConfigExport"]


class ConfigExport(ConfigWrites):
    """``export_configuration`` and ``import_configuration``."""

    async def export_configuration(
        self,
        format: str = "json",
        *,
        reveal_secrets: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """The runtime layer with its version and history, as JSON or YAML text.
        Secrets stay sealed unless ``reveal_secrets=True``."""
        doc = docs.encode_export(
            service=self.service_name,
            exported_at=self._clock.time(),
            head=self._history.head,
            entries=self._history.current,
            versions=self._history.versions(),
            reveal=reveal_secrets,
            metadata={"author": self.author, **dict(metadata or {})},
        )
        return docs.dump(doc, format)

    async def import_configuration(
        self,
        data: str | bytes | Mapping[str, Any],
        format: str = "json",
        *,
        replace: bool = False,
        description: str = "",
        author: str | None = None,
        validate: bool = True,
        expected_config_version: int | None = None,
    ) -> bool:
        """Apply an export (or a plain JSON/YAML document) as ONE version, after
        validating all of it. ``replace=True`` also removes runtime keys it lacks."""
        self._require_running()
        imported = docs.decode_export(docs.load(data, format))
        values: dict[str, Any] = {}
        for key, value in imported.values.items():
            check_key(key, self.limits.max_key_length)
            if key in imported.sealed:
                opened = self._policy.box.open(imported.sealed[key], context=key)
                values[key] = opened
            else:
                values[key] = value

        def plan() -> dict[str, Entry | None]:
            updates: dict[str, Entry | None] = {}
            if replace:
                updates.update({k: None for k in self._history.current if k not in values})
            for key, value in values.items():
                secret = True if key in imported.secret else None
                if isinstance(value, Mapping) and value:
                    updates.update(self._updates_for(key, value, ConfigSource.API, secret))
                else:
                    updates[key] = self._entry(key, value, ConfigSource.API, secret)
            return updates

        origin = ""
        if imported.version_id:
            origin = (
                f" of {imported.service or 'a service'} v{imported.version} ({imported.version_id})"
            )
        await self._change(
            plan,
            kind=ChangeKind.IMPORT,
            source=ConfigSource.API,
            description=description or f"import{origin}",
            author=author,
            validate=validate,
            expected_config_version=expected_config_version,
        )
        return True
