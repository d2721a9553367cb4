"""What discovery knows about a service instance: its endpoint and its health.

:class:`ServiceEndpoint` is validated on creation (every field, metadata size) and is
immutable, so the local cache can hand the same object to every caller. Records read
back from shared state go through :func:`endpoint_from_dict` / :func:`health_from_dict`,
which validate the same way (a corrupt record raises
:class:`~backend_services.errors.ValidationError`, the caller reports and skips it).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from ..errors import ValidationError

__all__ = [
    "DEFAULT_HEALTH_PATH",
    "MAX_METADATA_BYTES",
    "ServiceEndpoint",
    "ServiceHealth",
    "ServiceStatus",
    "ServiceType",
    "coerce_service_type",
    "endpoint_from_dict",
    "endpoint_to_dict",
    "health_from_dict",
    "health_to_dict",
]

MAX_METADATA_BYTES: Final = 64 * 1024
"""Largest metadata accepted, as compact JSON (UTF-8 bytes)."""
MAX_ID_LENGTH: Final = 256
MAX_HOST_LENGTH: Final = 253
MAX_PATH_LENGTH: Final = 2048
DEFAULT_HEALTH_PATH: Final = "/health"

_PROTOCOL = re.compile(r"^[a-z][a-z0-9+.-]{0,15}$")
_HOST_BAD = re.compile(r"[\s/?#@]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ServiceType(StrEnum):
    """Kinds of DTESN services."""

    DTESN_MEMBRANE = "dtesn_membrane"
    COGNITIVE_SERVICE = "cognitive_service"
    CACHE_SERVICE = "cache_service"
    LOAD_BALANCER = "load_balancer"
    API_GATEWAY = "api_gateway"
    MONITORING = "monitoring"
    AGENT_ARENA = "agent_arena"


class ServiceStatus(StrEnum):
    """Health status of an instance. Only ``HEALTHY`` instances are discovered."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"
    STARTING = "starting"
    STOPPING = "stopping"


def coerce_service_type(value: Any) -> ServiceType:
    """A :class:`ServiceType` from itself or its value (``"dtesn_membrane"``)."""
    if isinstance(value, ServiceType):
        return value
    if isinstance(value, str):
        try:
            return ServiceType(value.lower())
        except ValueError:
            pass
    raise ValidationError(
        "service_type", value, "a ServiceType, one of " + ", ".join(t.value for t in ServiceType)
    )


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ValidationError(name, value, f"a non-empty string of at most {limit} characters")
    if _CONTROL.search(value):
        raise ValidationError(name, value, "a string without control characters")
    return sys.intern(value) if len(value) <= 64 else value


def _metadata(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError("metadata", value, "a dict of JSON-serialisable values")
    for key in value:
        if not isinstance(key, str):
            raise ValidationError("metadata", key, "string keys")
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            "metadata", value, f"JSON-serialisable values (finite numbers, str, list, dict): {exc}"
        ) from None
    size = len(encoded.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValidationError(
            "metadata",
            f"<{size} bytes>",
            f"at most {MAX_METADATA_BYTES} bytes as JSON",
        )
    health_path = value.get("health_path")
    if health_path is not None and (
        not isinstance(health_path, str) or not health_path.startswith("/")
    ):
        raise ValidationError("metadata.health_path", health_path, "a path starting with '/'")
    return dict(value)


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """Where an instance of a service answers. Validated on creation; immutable.

    ``url`` is ``{protocol}://{host}:{port}{path}``; ``address`` is ``{host}:{port}``
    (IPv6 hosts in brackets). ``metadata["health_path"]`` overrides the discovery's
    health path for this instance; ``metadata["zone"]`` is used by zone-aware balancing.
    """

    service_id: str
    service_type: ServiceType
    host: str
    port: int
    protocol: str = "http"
    path: str = "/"
    weight: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        setter = object.__setattr__
        setter(self, "service_id", _text("service_id", self.service_id, MAX_ID_LENGTH))
        setter(self, "service_type", coerce_service_type(self.service_type))
        host = _text("host", self.host, MAX_HOST_LENGTH)
        if _HOST_BAD.search(host):
            raise ValidationError("host", host, "a host name or IP address (no '/', '@', spaces)")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        setter(self, "host", host)
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValidationError("port", port, "an integer from 1 to 65535")
        protocol = self.protocol
        if not isinstance(protocol, str) or not _PROTOCOL.match(protocol.lower()):
            raise ValidationError("protocol", protocol, "a URL scheme such as 'http' or 'tcp'")
        setter(self, "protocol", sys.intern(protocol.lower()))
        path = self.path
        if (
            not isinstance(path, str)
            or not path.startswith("/")
            or len(path) > MAX_PATH_LENGTH
            or _CONTROL.search(path)
        ):
            raise ValidationError(
                "path", path, f"a URL path starting with '/' (at most {MAX_PATH_LENGTH} chars)"
            )
        setter(self, "path", sys.intern(path) if len(path) <= 64 else path)
        weight = self.weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise ValidationError("weight", weight, "a finite number > 0")
        setter(self, "weight", float(weight))
        setter(self, "metadata", _metadata(self.metadata))

    def __hash__(self) -> int:
        return hash((self.service_id, self.host, self.port))

    @property
    def url(self) -> str:
        """``{protocol}://{host}:{port}{path}``."""
        return f"{self.protocol}://{self.address}{self.path}"

    @property
    def address(self) -> str:
        """``{host}:{port}``, with an IPv6 host in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def health_url(self, default_path: str = DEFAULT_HEALTH_PATH) -> str:
        """URL of this instance's health check (``metadata["health_path"]`` or the default)."""
        path = self.metadata.get("health_path") or default_path
        return f"{self.protocol}://{self.address}{path}"

    @property
    def zone(self) -> str | None:
        """``metadata["zone"]`` when it is a string, else ``None``."""
        zone = self.metadata.get("zone")
        return zone if isinstance(zone, str) else None


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """Health of one instance as discovery last saw it.

    ``last_check`` is wall time (seconds since the epoch; 0.0 before the first check),
    ``response_time_ms`` the duration of the last check, ``error_count`` the failed checks
    so far, ``consecutive_failures`` the current run of failures.
    """

    service_id: str
    status: ServiceStatus
    last_check: float = 0.0
    response_time_ms: float = 0.0
    error_count: int = 0
    consecutive_failures: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


def endpoint_to_dict(endpoint: ServiceEndpoint) -> dict[str, Any]:
    """The JSON form of an endpoint (what shared state holds)."""
    return {
        "service_id": endpoint.service_id,
        "service_type": endpoint.service_type.value,
        "host": endpoint.host,
        "port": endpoint.port,
        "protocol": endpoint.protocol,
        "path": endpoint.path,
        "weight": endpoint.weight,
        "metadata": endpoint.metadata,
    }


def endpoint_from_dict(doc: Any) -> ServiceEndpoint:
    """Rebuild (and validate) an endpoint from its JSON form."""
    if not isinstance(doc, Mapping):
        raise ValidationError("endpoint", doc, "an object with the endpoint's fields")
    try:
        return ServiceEndpoint(
            service_id=doc["service_id"],
            service_type=doc["service_type"],
            host=doc["host"],
            port=doc["port"],
            protocol=doc.get("protocol", "http"),
            path=doc.get("path", "/"),
            weight=doc.get("weight", 1.0),
            metadata=doc.get("metadata") or {},
        )
    except KeyError as exc:
        raise ValidationError(f"endpoint.{exc.args[0]}", None, "a value") from None


def health_to_dict(health: ServiceHealth) -> dict[str, Any]:
    """The JSON form of a health snapshot."""
    return {
        "service_id": health.service_id,
        "status": health.status.value,
        "last_check": health.last_check,
        "response_time_ms": health.response_time_ms,
        "error_count": health.error_count,
        "consecutive_failures": health.consecutive_failures,
        "metadata": health.metadata,
    }


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(name, value, "an integer >= 0")
    return value


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(name, value, "a finite number")
    return float(value)


def health_from_dict(doc: Any) -> ServiceHealth:
    """Rebuild (and validate) a health snapshot from its JSON form."""
    if not isinstance(doc, Mapping):
        raise ValidationError("health", doc, "an object with the health fields")
    try:
        status = ServiceStatus(str(doc.get("status")))
    except ValueError:
        raise ValidationError(
            "health.status",
            doc.get("status"),
            "one of " + ", ".join(s.value for s in ServiceStatus),
        ) from None
    service_id = doc.get("service_id")
    if not isinstance(service_id, str) or not service_id:
        raise ValidationError("health.service_id", service_id, "a non-empty string")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValidationError("health.metadata", metadata, "an object")
    return ServiceHealth(
        service_id=service_id,
        status=status,
        last_check=_real("health.last_check", doc.get("last_check", 0.0)),
        response_time_ms=_real("health.response_time_ms", doc.get("response_time_ms", 0.0)),
        error_count=_count("health.error_count", doc.get("error_count", 0)),
        consecutive_failures=_count(
            "health.consecutive_failures", doc.get("consecutive_failures", 0)
        ),
        metadata=metadata,
    )
