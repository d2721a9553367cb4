"""Authenticated encryption of secrets: sealing, tamper detection, rotation, key parsing."""

from __future__ import annotations

import pytest

from backend_services.config.secrets import (
    SEALED_PREFIX,
    SecretBox,
    generate_key,
    is_sealed,
    parse_keys,
)
from backend_services.errors import ConfigValidationError, SettingsError


def _box(*keys: str) -> SecretBox:
    return SecretBox(parse_keys(",".join(keys)))


class TestSealing:
    def test_round_trip_and_no_plaintext(self) -> None:
        """A sealed value opens to the original and does not contain it."""
        box = _box(generate_key())
        token = box.seal({"user": "u", "password": "hunter2"}, context="db")
        assert is_sealed(token)
        assert "hunter2" not in token
        assert box.open(token, context="db") == {"user": "u", "password": "hunter2"}

    def test_same_value_seals_differently(self) -> None:
        """Random nonces: equal plaintexts give different ciphertexts."""
        box = _box(generate_key())
        assert box.seal("x", context="k") != box.seal("x", context="k")

    def test_tampered_ciphertext_is_refused(self) -> None:
        """Changing one character makes decryption fail clearly."""
        box = _box(generate_key())
        token = box.seal("secret", context="k")
        bad = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
        with pytest.raises(ConfigValidationError, match="authentic"):
            box.open(bad, context="k")

    def test_ciphertext_is_bound_to_its_key(self) -> None:
        """A ciphertext moved to another key name does not decrypt."""
        box = _box(generate_key())
        token = box.seal("secret", context="db.password")
        with pytest.raises(ConfigValidationError):
            box.open(token, context="public.banner")

    def test_sealing_without_a_key_is_a_clear_error(self) -> None:
        """No key configured: sealing names the environment variable to set."""
        with pytest.raises(ConfigValidationError, match="DTESN_CONFIG_ENCRYPTION_KEYS"):
            SecretBox([]).seal("x", context="k")


class TestRotation:
    def test_old_key_still_opens_and_needs_rotation(self) -> None:
        """After putting a new key first, old ciphertexts open and are flagged."""
        old, new = generate_key(), generate_key()
        token = _box(old).seal("v", context="k")
        rotated = _box(new, old)
        assert rotated.open(token, context="k") == "v"
        assert rotated.needs_rotation(token)
        assert not rotated.needs_rotation(rotated.seal("v", context="k"))

    def test_unknown_key_names_its_id(self) -> None:
        """A ciphertext from a key we do not hold names that key's id."""
        token = _box(generate_key()).seal("v", context="k")
        kid = token[len(SEALED_PREFIX) :].split(":")[0]
        with pytest.raises(ConfigValidationError, match=kid):
            _box(generate_key()).open(token, context="k")


class TestKeyParsing:
    @pytest.mark.parametrize("text", ["not-base64!!", "c2hvcnQ", generate_key() + ",xyz"])
    def test_malformed_key_names_variable_and_position(self, text: str) -> None:
        """A bad key is an error naming the variable (and never echoing the key)."""
        with pytest.raises(SettingsError, match=r"DTESN_CONFIG_ENCRYPTION_KEYS\[\d\]=\'\*\*\*\'"):
            parse_keys(text)

    def test_empty_items_and_none_are_ignored(self) -> None:
        """No variable means no keys; blank items are skipped."""
        assert parse_keys(None) == []
        assert len(parse_keys(f" {generate_key()} , ")) == 1
