"""ServiceEndpoint / ServiceHealth: validation on creation, URLs, JSON round trips."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.discovery.model import (
    MAX_METADATA_BYTES,
    ServiceEndpoint,
    ServiceHealth,
    ServiceStatus,
    ServiceType,
    endpoint_from_dict,
    endpoint_to_dict,
    health_from_dict,
    health_to_dict,
)
from backend_services.errors import ValidationError


def _endpoint(**overrides: Any) -> ServiceEndpoint:
    fields: dict[str, Any] = {
        "service_id": "svc-1",
        "service_type": ServiceType.DTESN_MEMBRANE,
        "host": "localhost",
        "port": 8081,
    }
    fields.update(overrides)
    return ServiceEndpoint(**fields)


def test_enums_have_lower_case_values() -> None:
    """Enum values are the lower-case strings metrics and JSON hold."""
    assert ServiceType.DTESN_MEMBRANE.value == "dtesn_membrane"
    assert ServiceStatus.HEALTHY.value == "healthy"
    assert {s.value for s in ServiceStatus} >= {
        "healthy",
        "unhealthy",
        "unknown",
        "starting",
        "stopping",
    }


def test_defaults_and_url() -> None:
    """Spec defaults: http, path '/', weight 1, empty metadata; url and address built."""
    ep = _endpoint()
    assert (ep.protocol, ep.path, ep.weight, ep.metadata) == ("http", "/", 1.0, {})
    assert ep.url == "http://localhost:8081/"
    assert ep.address == "localhost:8081"


def test_ipv6_host_is_bracketed() -> None:
    """An IPv6 host appears in brackets in address and url (given bare or bracketed)."""
    assert _endpoint(host="::1").address == "[::1]:8081"
    assert _endpoint(host="[::1]", path="/api").url == "http://[::1]:8081/api"


def test_health_url_uses_metadata_override() -> None:
    """metadata['health_path'] overrides the discovery-wide health path."""
    assert _endpoint().health_url("/health") == "http://localhost:8081/health"
    assert _endpoint(metadata={"health_path": "/ready"}).health_url() == (
        "http://localhost:8081/ready"
    )


def test_service_type_accepts_its_value() -> None:
    """A service type given as its string value is coerced to the enum."""
    assert _endpoint(service_type="cache_service").service_type is ServiceType.CACHE_SERVICE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("service_id", ""),
        ("service_id", "   "),
        ("service_id", 42),
        ("service_id", "x" * 300),
        ("service_type", "no_such_type"),
        ("host", ""),
        ("host", "a b"),
        ("host", "evil/path"),
        ("port", 0),
        ("port", 65536),
        ("port", "8080"),
        ("port", True),
        ("protocol", "h t t p"),
        ("path", "no-slash"),
        ("weight", 0),
        ("weight", -1.0),
        ("weight", math.inf),
        ("weight", math.nan),
        ("metadata", {"x": object()}),
        ("metadata", {1: "int key"}),
        ("metadata", {"x": math.nan}),
        ("metadata", ["not", "a", "dict"]),
        ("metadata", {"health_path": "relative"}),
    ],
)
def test_invalid_fields_are_rejected_naming_the_field(field: str, value: Any) -> None:
    """Every invalid field raises ValidationError (a ValueError) naming the field."""
    with pytest.raises(ValidationError) as info:
        _endpoint(**{field: value})
    assert info.value.field.startswith(field.split(".")[0])
    assert isinstance(info.value, ValueError)
    assert field.split(".")[0] in str(info.value)


def test_metadata_size_limit() -> None:
    """Metadata up to 64 KiB of JSON is accepted; more is rejected with its size."""
    ok = {"blob": "x" * (MAX_METADATA_BYTES - 20)}
    assert _endpoint(metadata=ok).metadata == ok
    with pytest.raises(ValidationError, match="65536 bytes"):
        _endpoint(metadata={"blob": "x" * MAX_METADATA_BYTES})


def test_endpoint_is_immutable_and_metadata_copied() -> None:
    """Fields cannot be reassigned; the caller's metadata dict is copied."""
    meta = {"zone": "a"}
    ep = _endpoint(metadata=meta)
    meta["zone"] = "b"
    assert ep.metadata == {"zone": "a"}
    assert ep.zone == "a"
    with pytest.raises(AttributeError):
        ep.port = 1  # type: ignore[misc]


def test_endpoints_are_hashable() -> None:
    """Endpoints can be put in sets despite holding a metadata dict."""
    assert len({_endpoint(), _endpoint()}) == 1


_ids = st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    sid=_ids,
    stype=st.sampled_from(list(ServiceType)),
    port=st.integers(1, 65535),
    weight=st.floats(0.001, 1000),
    metadata=st.dictionaries(
        st.text(max_size=10).filter(lambda k: k != "health_path"), _json, max_size=4
    ),
)
def test_endpoint_json_round_trip(
    sid: str, stype: ServiceType, port: int, weight: float, metadata: dict[str, Any]
) -> None:
    """endpoint_from_dict(endpoint_to_dict(e)) == e for any valid endpoint."""
    ep = ServiceEndpoint(sid, stype, "10.0.0.1", port, weight=weight, metadata=metadata)
    assert endpoint_from_dict(endpoint_to_dict(ep)) == ep


def test_endpoint_from_dict_reports_missing_fields() -> None:
    """A stored endpoint missing a field is a ValidationError naming it."""
    doc = endpoint_to_dict(_endpoint())
    del doc["port"]
    with pytest.raises(ValidationError, match=r"endpoint\.port"):
        endpoint_from_dict(doc)


def test_health_round_trip_and_validation() -> None:
    """Health snapshots round-trip through JSON; bad status or counts are rejected."""
    health = ServiceHealth("a", ServiceStatus.UNHEALTHY, 1.5, 2.5, 3, 2, {"last_error": "x"})
    assert health_from_dict(health_to_dict(health)) == health
    bad = health_to_dict(health) | {"status": "green"}
    with pytest.raises(ValidationError, match=r"health\.status"):
        health_from_dict(bad)
    with pytest.raises(ValidationError, match="error_count"):
        health_from_dict(health_to_dict(health) | {"error_count": -1})
