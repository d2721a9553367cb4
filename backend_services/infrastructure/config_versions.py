"""Versions of the configuration manager: snapshots, history, diffs, rollback and
re-encryption of secrets — each change a new version made through the write path of
:mod:`backend_services.infrastructure.config_writes`.
"""

from __future__ import annotations

from typing import Any

from ..config.model import REDACTED, UNREADABLE, ChangeKind, ConfigSource, ConfigVersion, Entry
from ..config.versions import ConfigDiff
from ..errors import ValidationError
from .config_writes import ConfigWrites

__all__ = ["ConfigVersions"]


class ConfigVersions(ConfigWrites):
    """Snapshot, list, read, diff and roll back versions; rotate the secrets' key."""

    async def create_version_snapshot(
        self, description: str = "", *, author: str | None = None
    ) -> str:
        """Mark the current content as a named version; returns its id (never reused)."""
        record = await self._change(
            lambda: {},
            kind=ChangeKind.SNAPSHOT,
            source=ConfigSource.API,
            description=description,
            author=author,
            force=True,
        )
        assert record is not None
        return record.id

    async def list_versions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Retained versions, oldest first (``limit``: the newest N)."""
        return [m.as_dict() for m in self._history.versions(limit)]

    def get_version(self, version_id: str | int) -> ConfigVersion:
        record = self._history.find(version_id)
        if record is None:
            raise ValidationError("version_id", version_id, "the id of a retained version")
        return record.meta

    async def get_version_config(
        self, version_id: str | int, *, reveal: bool = False
    ) -> dict[str, Any]:
        """The runtime layer as of ``version_id`` (secrets redacted unless ``reveal``)."""
        content = self._history.content_at(version_id)
        return {
            k: (e.value if reveal or not e.secret else REDACTED) for k, e in sorted(content.items())
        }

    async def diff_versions(
        self, a: str | int, b: str | int, *, reveal: bool = False
    ) -> ConfigDiff:
        """What changed from version ``a`` to version ``b``."""
        return self._history.diff(a, b, reveal=reveal)

    diff = diff_versions

    async def rollback_to_version(
        self,
        version_id: str | int,
        *,
        description: str = "",
        author: str | None = None,
        validate: bool = True,
        expected_config_version: int | None = None,
    ) -> bool:
        """Make the runtime layer exactly what it was at ``version_id`` (keys added since
        are removed), as a new version, for the whole fleet."""
        self._require_running()
        target = self._history.find(version_id)
        if target is None:
            raise ValidationError(
                "version_id",
                version_id,
                "the id of a retained version "
                f"(see list_versions(); {len(self._history.records())} kept)",
            )
        target_id = target.id
        await self._change(
            lambda: self._history.rollback_plan(target_id),
            kind=ChangeKind.ROLLBACK,
            source=ConfigSource.API,
            description=description or f"rollback to v{target.version} ({target_id})",
            author=author,
            validate=validate,
            expected_config_version=expected_config_version,
            restored_id=target_id,
            force=True,
        )
        return True

    async def rotate_encryption(self, *, author: str | None = None) -> int:
        """Re-seal every secret with the newest key (a new version); how many changed."""
        self._require_running()

        def plan() -> dict[str, Entry | None]:
            out: dict[str, Entry | None] = {}
            for key, entry in self._history.current.items():
                if entry.secret and entry.sealed and self._policy.box.needs_rotation(entry.sealed):
                    if entry.value is UNREADABLE:
                        continue
                    out[key] = Entry(
                        entry.value,
                        entry.source,
                        secret=True,
                        sealed=self._policy.box.seal(entry.value, context=key),
                    )
            return out

        record = await self._change(
            plan,
            kind=ChangeKind.ROTATE,
            source=ConfigSource.API,
            description="re-encrypted secrets with the newest key",
            author=author,
            validate=False,
            rewrite=True,
        )
        return 0 if record is None else len(record.changes)
