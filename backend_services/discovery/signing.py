"""Signed registry records: a writer without the key cannot forge or alter them.

Every document discovery writes to shared state (registrations, health, change-feed
events) carries ``"sig": "<key id>:<HMAC-SHA256>"`` over its canonical JSON (sorted keys,
compact) with ``"sig"`` itself left out. Readers with a key verify; when signatures are
required an unsigned or badly signed document is ignored and reported. This holds even
against a process with write access to Redis: it can delete, but it cannot inject.

Keys come from ``DTESN_SERVICE_REGISTRATION_KEY`` (or the ``registration_key=`` argument);
older keys may be listed for verification while a new one is rolled out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Final

__all__ = ["REGISTRATION_KEY_ENV", "SIGNATURE_FIELD", "RecordSigner", "Verdict", "canonical_json"]

SIGNATURE_FIELD: Final = "sig"
REGISTRATION_KEY_ENV: Final = "DTESN_SERVICE_REGISTRATION_KEY"
"""Environment variable holding the key that signs and verifies registry documents."""


class Verdict(StrEnum):
    """Outcome of checking one document's signature."""

    VALID = "valid"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, compact, UTF-8, ``sig`` left out."""
    body = {k: v for k, v in doc.items() if k != SIGNATURE_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"dtesn-registry-key:" + key).hexdigest()[:8]


class RecordSigner:
    """Signs and verifies registry documents with HMAC-SHA256.

    ``key``: the signing key (``None``: documents are written unsigned).
    ``require``: readers accept only validly signed documents (default: when a key is set).
    ``verify_keys``: extra keys accepted when verifying (rotation).
    """

    __slots__ = ("_keys", "_signing", "_signing_id", "require")

    def __init__(
        self,
        key: str | bytes | None,
        *,
        require: bool | None = None,
        verify_keys: Iterable[str | bytes] = (),
    ) -> None:
        self._signing = _key_bytes(key) if key else None
        self._signing_id = _key_id(self._signing) if self._signing else ""
        self._keys: dict[str, bytes] = {}
        for extra in (key, *verify_keys):
            if extra:
                raw = _key_bytes(extra)
                self._keys[_key_id(raw)] = raw
        self.require = bool(self._keys) if require is None else require

    @property
    def can_sign(self) -> bool:
        """True when this signer holds a signing key."""
        return self._signing is not None

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with a fresh ``sig`` field (unchanged when there is no key)."""
        if self._signing is None:
            doc.pop(SIGNATURE_FIELD, None)
            return doc
        doc[SIGNATURE_FIELD] = self._mac(self._signing_id, self._signing, canonical_json(doc))
        return doc

    @staticmethod
    def _mac(key_id: str, key: bytes, body: bytes) -> str:
        digest = hmac.new(key, body, hashlib.sha256).digest()
        return key_id + ":" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, doc: Mapping[str, Any]) -> Verdict:
        """Check the signature of ``doc``."""
        sig = doc.get(SIGNATURE_FIELD)
        if not isinstance(sig, str) or ":" not in sig:
            return Verdict.UNSIGNED
        key_id = sig.split(":", 1)[0]
        key = self._keys.get(key_id)
        if key is None:
            return Verdict.UNKNOWN_KEY
        expected = self._mac(key_id, key, canonical_json(doc))
        return Verdict.VALID if hmac.compare_digest(expected, sig) else Verdict.BAD_SIGNATURE

    def accepts(self, doc: Mapping[str, Any]) -> Verdict | None:
        """``None`` when a reader may use ``doc``, else the reason to ignore it."""
        if not self.require:
            if SIGNATURE_FIELD in doc and self._keys:
                verdict = self.verify(doc)
                return None if verdict is not Verdict.BAD_SIGNATURE else verdict
            return None
        verdict = self.verify(doc)
        return None if verdict is Verdict.VALID else verdict
