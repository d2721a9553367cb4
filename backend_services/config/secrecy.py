"""Which keys are secret, and sealing/opening their values.

A key is *marked* secret by an exact key (which covers everything below it) or a glob
pattern (``"*.password"``); marked keys are encrypted at rest. A key is *redacted* when
shown (logs, summaries, diffs, explanations) if it is marked, stored as a secret, or its
name looks like one (``password``, ``token``, ``api_key``, …) — redaction errs on the
safe side, encryption does exactly what was asked.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any, Final

from ..errors import ConfigValidationError, ValidationError
from ..log import looks_secret
from .model import REDACTED, UNREADABLE, ConfigSource, Entry
from .secrets import SecretBox
from .tree import check_key, parents
from .validation import Limits, check_value

__all__ = ["SecretPolicy", "looks_secret"]

_CACHE_LIMIT: Final = 100_000


class SecretPolicy:
    """Marked keys, the cipher, and a once-per-key report of unreadable secrets."""

    def __init__(
        self,
        box: SecretBox,
        patterns: Iterable[str] = (),
        *,
        report_unreadable: Callable[[str, str], None] | None = None,
    ) -> None:
        self.box = box
        self._patterns: list[str] = []
        self._exact: set[str] = set()
        self._marked: dict[str, bool] = {}
        self._redacted: dict[str, bool] = {}
        self._report = report_unreadable
        self._reported: set[str] = set()
        for pattern in patterns:
            self.mark(pattern)

    def mark(self, pattern: str) -> None:
        """Mark an exact key (and everything under it) or a glob pattern as secret."""
        if not isinstance(pattern, str) or not pattern:
            raise ValidationError("secret_keys", pattern, "a key or a glob pattern")
        if any(ch in pattern for ch in "*?["):
            self._patterns.append(pattern)
        else:
            self._exact.add(check_key(pattern))
        self._marked.clear()
        self._redacted.clear()

    def marked(self, key: str) -> bool:
        hit = self._marked.get(key)
        if hit is None:
            hit = (
                key in self._exact
                or any(p in self._exact for p in parents(key))
                or any(fnmatch.fnmatchcase(key, p) for p in self._patterns)
            )
            if len(self._marked) < _CACHE_LIMIT:
                self._marked[key] = hit
        return hit

    def redacted(self, key: str) -> bool:
        """Whether ``key``'s value is hidden when shown (a stored secret aside)."""
        hit = self._redacted.get(key)
        if hit is None:
            hit = self.marked(key) or looks_secret(key)
            if len(self._redacted) < _CACHE_LIMIT:
                self._redacted[key] = hit
        return hit

    def open(self, key: str, token: str) -> Any:
        """The plaintext of a sealed value, or UNREADABLE (reported once per key)."""
        try:
            return self.box.open(token, context=key)
        except ConfigValidationError as exc:
            if key not in self._reported:
                self._reported.add(key)
                if self._report is not None:
                    self._report(key, exc.expected)
            return UNREADABLE

    def seal_file_value(self, key: str, value: Any) -> str | None:
        """The ciphertext of a marked file value (None when not marked or no key)."""
        if not self.marked(key) or not self.box.enabled:
            return None
        return self.box.seal(value, context=key)

    def entry(
        self,
        key: str,
        value: Any,
        source: ConfigSource,
        limits: Limits,
        *,
        secret: bool | None,
        current: Entry | None,
    ) -> Entry:
        """A new runtime entry: value checked (redacted in errors when secret), sealed
        when the key is marked, asked to be secret, or already stored as a secret."""
        is_secret = (
            bool(secret)
            or self.marked(key)
            or (secret is None and current is not None and current.secret)
        )
        try:
            value = check_value(key, value, limits)
        except ConfigValidationError as exc:
            if is_secret:
                raise ConfigValidationError(exc.field, REDACTED, exc.expected) from None
            raise
        if is_secret:
            return Entry(value, source, secret=True, sealed=self.box.seal(value, context=key))
        return Entry(value, source)
