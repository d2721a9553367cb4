"""JSON forms: entries, records, exports (sealed secrets) and last-known-good files."""

from __future__ import annotations

import json

import pytest

from backend_services.config import documents as docs
from backend_services.config.model import (
    UNREADABLE,
    ChangeKind,
    ConfigSource,
    ConfigVersion,
    Entry,
    VersionRecord,
)
from backend_services.config.secrets import SecretBox, generate_key, parse_keys
from backend_services.errors import ConfigValidationError

BOX = SecretBox(parse_keys(generate_key()))


def _opener(key: str, token: str) -> object:
    return BOX.open(token, context=key)


def _secret(key: str, value: object) -> Entry:
    return Entry(value, ConfigSource.API, 2, 5.0, "me", True, BOX.seal(value, context=key))


META = ConfigVersion(
    2, "v2-abc-01", 5.0, ConfigSource.API, ChangeKind.SET, "d", "me", ("a",), 1, "v1-abc-00"
)


class TestEntriesAndRecords:
    def test_secret_entry_is_written_sealed_only(self) -> None:
        """The JSON form of a secret holds the ciphertext, never the plaintext."""
        raw = docs.encode_entry(_secret("pw", "hunter2"))
        assert "hunter2" not in json.dumps(raw)
        assert raw["secret"] is True
        assert docs.decode_entry("pw", raw, _opener).value == "hunter2"

    def test_record_round_trip(self) -> None:
        """A record survives encode/decode with its metadata and changes."""
        record = VersionRecord(META, {"a": (None, Entry(1, version=2)), "b": (Entry(3), None)})
        back = docs.decode_record(json.loads(json.dumps(docs.encode_record(record))), _opener)
        assert back.meta == META
        assert back.changes["a"][1] is not None
        assert back.changes["a"][1].value == 1
        assert back.changes["b"][1] is None

    @pytest.mark.parametrize(
        "raw",
        [
            5,
            {"meta": {"id": "x"}, "changes": {}},
            {"meta": {"version": 1}, "changes": {}},
            {"meta": {"version": 1, "id": "x", "kind": "explode"}, "changes": {}},
        ],
    )
    def test_malformed_records_are_clear_errors(self, raw: object) -> None:
        """Corrupt data read back is rejected with the field named."""
        with pytest.raises(ConfigValidationError):
            docs.decode_record(raw, _opener)


class TestExport:
    def test_export_keeps_secrets_sealed_and_round_trips(self) -> None:
        """An export carries ciphertext; decoding gives it back for import."""
        entries = {"pw": _secret("pw", "hunter2"), "depth": Entry(6, version=2)}
        doc = docs.encode_export(
            service="s", exported_at=1.0, head=META, entries=entries, versions=[META], reveal=False
        )
        text = docs.dump(doc, "yaml")
        assert "hunter2" not in text
        imported = docs.decode_export(docs.load(text, "yaml"))
        assert imported.values["depth"] == 6
        assert "pw" in imported.secret
        assert BOX.open(imported.sealed["pw"], context="pw") == "hunter2"
        assert imported.version == 2
        assert imported.version_id == META.id

    def test_plaintext_only_when_asked(self) -> None:
        """reveal=True exports the plaintext, still marked secret."""
        doc = docs.encode_export(
            service="s",
            exported_at=1.0,
            head=None,
            entries={"pw": _secret("pw", "x")},
            versions=[],
            reveal=True,
        )
        assert doc["entries"]["pw"] == {
            "value": "x",
            "secret": True,
            "source": "api",
            "version": 2,
            "updated_at": 5.0,
            "author": "me",
        }
        assert doc["secrets"] == "plaintext"

    def test_plain_and_first_system_documents_import(self) -> None:
        """A plain nested document and {"config": {k: {"value": v}}} both import."""
        assert docs.decode_export({"a": {"b": 1}}).values == {"a.b": 1}
        legacy = {"config": {"x": {"value": 2, "source": "api"}}, "service_name": "s"}
        assert docs.decode_export(legacy).values == {"x": 2}

    def test_bad_format_is_refused(self) -> None:
        """Only json and yaml are formats."""
        with pytest.raises(ConfigValidationError, match="format"):
            docs.dump({}, "xml")
        with pytest.raises(ConfigValidationError, match="valid JSON"):
            docs.load("{", "json")


class TestLastKnownGood:
    def test_round_trip_with_sealed_file_secrets(self) -> None:
        """The LKG document keeps file secrets sealed and restores everything."""
        lkg = docs.LastKnownGood(
            service="s",
            saved_at=9.0,
            head=META,
            entries={"pw": _secret("pw", "p")},
            records=[VersionRecord(META, {"pw": (None, _secret("pw", "p"))})],
            file_path="c.json",
            file_sha256="ab",
            file_values={"db.password": "file-password-3f9a", "x": 1},
        )

        def seal(key: str, value: object) -> str | None:
            return BOX.seal(value, context=key) if "password" in key else None

        text = json.dumps(docs.encode_lkg(lkg, seal))
        assert "file-password-3f9a" not in text
        back = docs.decode_lkg(json.loads(text), _opener)
        assert back.file_values == {"db.password": "file-password-3f9a", "x": 1}
        assert back.entries["pw"].value == "p"
        assert back.head == META

    def test_unreadable_secret_becomes_marker(self) -> None:
        """Without the key, a sealed entry decodes to UNREADABLE via the opener."""
        raw = docs.encode_entry(_secret("pw", "p"))
        entry = docs.decode_entry("pw", raw, lambda k, t: UNREADABLE)
        assert entry.value is UNREADABLE
        assert entry.secret
