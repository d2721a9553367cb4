"""Pure parts of the control plane: rate limiting, schema validation, transitions, tokens."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.control.openapi import OPERATIONS, build_document
from backend_services.control.ratelimit import RateLimiter
from backend_services.control.schema import validate
from backend_services.control.security import MIN_TOKEN_LENGTH, resolve_token
from backend_services.control.watch import transitions_between
from backend_services.errors import SettingsError, ValidationError

# --- rate limiting -------------------------------------------------------------------


def test_bucket_allows_a_burst_then_refuses_with_the_wait() -> None:
    """A client gets ``burst`` requests at once, then a refusal saying how long to wait."""
    rl = RateLimiter(rate=2.0, burst=3)
    assert all(rl.check("a", 0.0).allowed for _ in range(3))
    refused = rl.check("a", 0.0)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.5)


def test_bucket_refills_with_time() -> None:
    """Tokens come back at ``rate`` per second, never above the burst."""
    rl = RateLimiter(rate=2.0, burst=2)
    rl.check("a", 0.0)
    rl.check("a", 0.0)
    assert not rl.check("a", 0.1).allowed
    assert rl.check("a", 0.6).allowed
    later = rl.check("a", 100.0)
    assert later.allowed
    assert later.remaining == pytest.approx(1.0)


def test_clients_have_separate_buckets_and_memory_is_bounded() -> None:
    """One client's exhaustion does not limit another; old clients are forgotten."""
    rl = RateLimiter(rate=1.0, burst=1, max_clients=2)
    assert rl.check("a", 0.0).allowed
    assert not rl.check("a", 0.0).allowed
    assert rl.check("b", 0.0).allowed
    assert rl.check("c", 0.0).allowed
    assert len(rl) == 2
    assert rl.check("a", 0.0).allowed  # forgotten, so a fresh bucket


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=60))
def test_never_more_than_burst_plus_rate_times_elapsed(steps: list[float]) -> None:
    """Over any run, allowed requests never exceed burst + rate * elapsed."""
    rl = RateLimiter(rate=5.0, burst=4)
    now = 0.0
    allowed = 0
    for step in steps:
        now += step
        allowed += rl.check("c", now).allowed
    assert allowed <= 4 + 5.0 * now + 1e-9


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0), (float("nan"), 1)])
def test_bad_limits_are_rejected(rate: float, burst: float) -> None:
    """Rates must be > 0 and bursts >= 1."""
    with pytest.raises(ValidationError):
        RateLimiter(rate, burst)


# --- schema --------------------------------------------------------------------------

FORCE_BODY = next(op.body for op in OPERATIONS if op.operation_id == "forceDegradation")


def test_valid_body_passes_unchanged() -> None:
    """A conforming body is returned as it is."""
    body = {"level": "minimal", "reason": "drill", "duration": 30}
    assert FORCE_BODY is not None
    assert validate(body, FORCE_BODY, "body") == body


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        ({}, "body.level", "required"),
        ({"level": "worst"}, "body.level", "one of"),
        ({"level": "partial", "duration": 0}, "body.duration", "> 0"),
        ({"level": "partial", "duration": True}, "body.duration", "number"),
        ({"level": "partial", "extra": 1}, "body.extra", "no such field"),
        ({"level": "partial", "reason": "x" * 501}, "body.reason", "at most 500"),
        ([], "body", "object"),
    ],
)
def test_invalid_bodies_name_field_and_expectation(body: Any, field: str, expected: str) -> None:
    """Each invalid body raises a ValidationError naming the field and what was expected."""
    assert FORCE_BODY is not None
    with pytest.raises(ValidationError) as info:
        validate(body, FORCE_BODY, "body")
    assert info.value.field == field
    assert expected in info.value.expected


def test_patterns_lengths_items_and_non_finite_numbers() -> None:
    """String patterns, array limits and non-finite numbers are enforced."""
    schema = {"type": "array", "maxItems": 2, "items": {"type": "string", "pattern": "^a"}}
    assert validate(["ab"], schema, "x") == ["ab"]
    with pytest.raises(ValidationError, match=r"x\[0\]"):
        validate(["b"], schema, "x")
    with pytest.raises(ValidationError, match="at most 2"):
        validate(["a", "a", "a"], schema, "x")
    with pytest.raises(ValidationError):
        validate(float("inf"), {"type": "number"}, "n")


# --- openapi -------------------------------------------------------------------------


def test_document_lists_every_operation_once_with_security() -> None:
    """Every operation appears once; mutations (and, when protected, reads) need the token."""
    doc = build_document(protect_reads=False, version="1")
    ids = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert sorted(ids) == sorted(op.operation_id for op in OPERATIONS)
    force = doc["paths"]["/api/v1/degradation/{service}/force"]["post"]
    assert force["security"] == [{"bearerAuth": []}]
    assert "401" in force["responses"]
    assert doc["paths"]["/api/v1/services"]["get"]["security"] == []
    protected = build_document(protect_reads=True, version="1")
    assert protected["paths"]["/api/v1/services"]["get"]["security"] == [{"bearerAuth": []}]
    assert protected["paths"]["/healthz"]["get"]["security"] == []


def test_every_schema_reference_resolves() -> None:
    """Every $ref in the document points at a defined component schema."""
    doc = build_document(protect_reads=False, version="1")
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]


# --- transitions ---------------------------------------------------------------------


def _snap(
    services: dict[str, str], circuits: dict[str, str], version: str | None = None
) -> dict[str, Any]:
    return {
        "services": [{"service_id": k, "status": v} for k, v in services.items()],
        "circuits": [{"name": k, "state": v} for k, v in circuits.items()],
        "degradation": [],
        "config": {"service": "svc", "version": version},
    }


def test_first_snapshot_reports_every_item_as_new() -> None:
    """Without a previous snapshot, every item is a transition from nothing."""
    found = transitions_between(None, _snap({"m1": "starting"}, {"m1": "closed"}), 5.0, [1, 2])
    assert [(t.kind, t.name, t.old, t.new, t.time) for t in found] == [
        ("service", "m1", None, "starting", 5.0),
        ("circuit", "m1", None, "closed", 5.0),
    ]


def test_changes_removals_and_config_versions_are_transitions() -> None:
    """State changes, removed items and a new config version are reported, nothing else."""
    old = _snap({"m1": "healthy", "m2": "healthy"}, {"m1": "closed"}, "v1")
    new = _snap({"m1": "unhealthy"}, {"m1": "closed"}, "v2")
    found = transitions_between(old, new, 9.0, itertools.count(10))
    assert [(t.seq, t.kind, t.name, t.old, t.new) for t in found] == [
        (10, "service", "m1", "healthy", "unhealthy"),
        (11, "service", "m2", "healthy", "removed"),
        (12, "config", "svc", "v1", "v2"),
    ]
    assert transitions_between(new, new, 10.0, itertools.count()) == []


def test_degradation_transitions_carry_the_reason() -> None:
    """A degradation level change carries the manager's reason."""
    old = {"degradation": [{"service": "s", "level": "normal"}]}
    new = {"degradation": [{"service": "s", "level": "minimal", "reason": "cpu 0.93"}]}
    (tr,) = transitions_between(old, new, 1.0, [1])
    assert (tr.old, tr.new, tr.reason) == ("normal", "minimal", "cpu 0.93")


# --- token ---------------------------------------------------------------------------


def test_token_comes_from_argument_then_env_then_file(tmp_path: Any) -> None:
    """The argument wins over DTESN_CONTROL_TOKEN, which wins over the token file."""
    file = tmp_path / "token"
    file.write_text("f" * 20 + "\n")
    env = {"DTESN_CONTROL_TOKEN": "e" * 20, "DTESN_CONTROL_TOKEN_FILE": str(file)}
    assert resolve_token("a" * 20, env) == "a" * 20
    assert resolve_token(None, env) == "e" * 20
    assert resolve_token(None, {"DTESN_CONTROL_TOKEN_FILE": str(file)}) == "f" * 20
    assert resolve_token(None, {}) is None


def test_short_tokens_are_refused_without_showing_them() -> None:
    """A too-short token is a SettingsError whose message does not contain it."""
    secret = "s3cret"
    with pytest.raises(SettingsError) as info:
        resolve_token(None, {"DTESN_CONTROL_TOKEN": secret})
    assert secret not in str(info.value)
    assert str(MIN_TOKEN_LENGTH) in str(info.value)


def test_unreadable_token_file_is_a_clear_error(tmp_path: Any) -> None:
    """A token file that cannot be read names the variable and the path."""
    missing = tmp_path / "nope"
    with pytest.raises(SettingsError, match="DTESN_CONTROL_TOKEN_FILE"):
        resolve_token(None, {"DTESN_CONTROL_TOKEN_FILE": str(missing)})
