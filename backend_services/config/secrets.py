"""Authenticated encryption of secret configuration values, with key rotation.

Keys come from the environment variable ``DTESN_CONFIG_ENCRYPTION_KEYS`` (or the
``encryption_keys=`` argument): a comma-separated list of URL-safe base64 keys of 16, 24
or 32 bytes, **newest first**. The newest key encrypts; every listed key decrypts, so a
rotation is: put the new key in front, restart (or reload), then re-encrypt what is
stored (``ConfigurationManager.rotate_encryption()``), then drop the old key. Generate
a key with ``python -c "from backend_services.config.secrets import generate_key;
print(generate_key())"``.

A sealed value is ``enc:v1:<key id>:<base64(nonce ‖ AES-GCM ciphertext ‖ tag)>``. The key
id is the first 8 hex digits of the key's SHA-256 (it names the key without revealing
it). The associated data binds the ciphertext to its service and key name, so a
ciphertext copied onto another key fails to decrypt instead of leaking into it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigValidationError, SettingsError

__all__ = [
    "ENCRYPTION_KEYS_ENV",
    "SEALED_PREFIX",
    "SecretBox",
    "generate_key",
    "is_sealed",
    "parse_keys",
]

ENCRYPTION_KEYS_ENV: Final = "DTESN_CONFIG_ENCRYPTION_KEYS"
SEALED_PREFIX: Final = "enc:v1:"
_NONCE: Final = 12


def generate_key() -> str:
    """A fresh random 256-bit key, URL-safe base64 (the format the variable takes)."""
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


def _decode_key(item: str, source: str, position: int) -> bytes:
    text = item.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) not in (16, 24, 32):
        raise SettingsError(
            f"{source}[{position}]",
            "***",
            "a URL-safe base64 AES key of 16, 24 or 32 bytes (newest first, comma-separated)",
        )
    return raw


def parse_keys(
    text: str | Iterable[str | bytes] | None, source: str = ENCRYPTION_KEYS_ENV
) -> list[bytes]:
    """Keys from the variable's text (or a list of keys); newest first."""
    if text is None:
        return []
    items: Iterable[str | bytes] = text.split(",") if isinstance(text, str) else text
    keys: list[bytes] = []
    for position, item in enumerate(items):
        if isinstance(item, bytes):
            if len(item) not in (16, 24, 32):
                raise SettingsError(f"{source}[{position}]", "***", "16, 24 or 32 raw key bytes")
            keys.append(item)
        elif item.strip():
            keys.append(_decode_key(item, source, position))
    return keys


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class SecretBox:
    """Seals and opens JSON values with AES-GCM under the newest of several keys."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._ciphers: dict[str, AESGCM] = {}
        self._order: list[str] = []
        for key in keys:
            kid = _key_id(key)
            if kid not in self._ciphers:
                self._ciphers[kid] = AESGCM(key)
                self._order.append(kid)

    @property
    def enabled(self) -> bool:
        return bool(self._order)

    @property
    def key_ids(self) -> list[str]:
        """Ids of the usable keys, newest first."""
        return list(self._order)

    def seal(self, value: Any, *, context: str) -> str:
        """Encrypt a JSON value under the newest key, bound to ``context``."""
        if not self._order:
            raise ConfigValidationError(
                context,
                "***",
                f"an encryption key in {ENCRYPTION_KEYS_ENV} (or encryption_keys=) "
                "to store a secret",
            )
        kid = self._order[0]
        nonce = os.urandom(_NONCE)
        plaintext = json.dumps(value, separators=(",", ":")).encode("utf-8")
        blob = nonce + self._ciphers[kid].encrypt(nonce, plaintext, context.encode("utf-8"))
        return f"{SEALED_PREFIX}{kid}:{base64.urlsafe_b64encode(blob).decode('ascii')}"

    def open(self, token: str, *, context: str) -> Any:
        """Decrypt ``token``; a clear error when no key fits or it was tampered with."""
        if not is_sealed(token):
            raise ConfigValidationError(context, "***", f"a value sealed as {SEALED_PREFIX}…")
        kid, _, body = token[len(SEALED_PREFIX) :].partition(":")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise ConfigValidationError(
                context,
                "***",
                f"a value sealed with a key listed in {ENCRYPTION_KEYS_ENV} "
                f"(it was sealed with key id {kid}; known: {', '.join(self._order) or 'none'})",
            )
        try:
            blob = base64.urlsafe_b64decode(body)
            plaintext = cipher.decrypt(blob[:_NONCE], blob[_NONCE:], context.encode("utf-8"))
            return json.loads(plaintext)
        except (InvalidTag, ValueError, binascii.Error):
            raise ConfigValidationError(
                context, "***", "an authentic ciphertext for this key (it was altered or moved)"
            ) from None

    def needs_rotation(self, token: str) -> bool:
        """Whether ``token`` was sealed with a key other than the newest."""
        kid = token[len(SEALED_PREFIX) :].partition(":")[0]
        return bool(self._order) and kid != self._order[0]
