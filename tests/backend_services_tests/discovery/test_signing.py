"""Signed registry documents: forgery and tampering are detected."""

from __future__ import annotations

from typing import Any

from backend_services.discovery.signing import RecordSigner, Verdict


def _doc() -> dict[str, Any]:
    return {"kind": "registration", "endpoint": {"service_id": "a", "port": 1}, "owner": "n"}


def test_signed_document_verifies() -> None:
    """A document signed with the key verifies, and the signature names the key."""
    signer = RecordSigner("secret")
    doc = signer.sign(_doc())
    assert signer.verify(doc) is Verdict.VALID
    assert signer.accepts(doc) is None


def test_tampering_is_detected() -> None:
    """Changing any signed field breaks the signature."""
    signer = RecordSigner("secret")
    doc = signer.sign(_doc())
    doc["endpoint"]["port"] = 2
    assert signer.verify(doc) is Verdict.BAD_SIGNATURE
    assert signer.accepts(doc) is Verdict.BAD_SIGNATURE


def test_unsigned_and_foreign_key_documents_are_refused_when_required() -> None:
    """With a key, unsigned documents and those signed by another key are refused."""
    signer = RecordSigner("secret")
    assert signer.accepts(_doc()) is Verdict.UNSIGNED
    forged = RecordSigner("other").sign(_doc())
    assert signer.accepts(forged) is Verdict.UNKNOWN_KEY


def test_rotation_accepts_old_keys_but_signs_with_the_new_one() -> None:
    """verify_keys keeps old signatures valid during a key rollout."""
    old = RecordSigner("old").sign(_doc())
    signer = RecordSigner("new", verify_keys=["old"])
    assert signer.accepts(old) is None
    assert signer.sign(_doc())["sig"].split(":")[0] != old["sig"].split(":")[0]


def test_without_key_nothing_is_signed_or_required() -> None:
    """No key: documents are written unsigned and readers accept anything."""
    signer = RecordSigner(None)
    assert not signer.can_sign
    assert not signer.require
    assert "sig" not in signer.sign(_doc())
    assert signer.accepts(_doc()) is None


def test_signature_is_independent_of_key_order() -> None:
    """The signature covers canonical JSON: key order does not matter."""
    signer = RecordSigner("secret")
    doc = signer.sign(_doc())
    reordered = dict(reversed(list(doc.items())))
    assert signer.verify(reordered) is Verdict.VALID
