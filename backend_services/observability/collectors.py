"""Prometheus families built at scrape time from each component's own counters.

Components count in plain attributes (what their ``get_metrics()`` returns); nothing here
runs on a request path. :func:`register_components` adds lazy collectors for the parts a
process has to a :class:`~backend_services.observability.metrics.Registry`;
:func:`metrics_text` renders them in one call (what a membrane's ``/metrics`` serves).

Names and labels (``backend_services_`` prefix):

==========================================================  ===========================
family                                                      labels
==========================================================  ===========================
``circuit_breaker_calls_total``                             circuit, outcome
``circuit_breaker_slow_calls_total`` / ``_timeouts_total``  circuit
``circuit_breaker_state`` (1 for the current state)         circuit, state
``circuit_breaker_failure_rate`` / ``_slow_call_rate``      circuit
``circuit_breaker_openings_total`` / ``_transitions_total`` circuit
``discovery_instances`` / ``discovery_healthy_instances``   service_type
``discovery_instance_up`` / ``_health_check_latency_seconds``  service_id, service_type
``discovery_health_checks_total`` (+ ``_failed_``)          —
``discovery_requests_total``, ``discovery_ejected_instances``  —
``discovery_view_age_seconds`` (propagation lag)            —
``store_connected`` / ``store_outages_total`` /
``store_pending_writes``                                    component, backend
``degradation_level`` (severity 0..4)                       service
``degradation_state`` (1 for the current level)             service, level
``degradation_resource_usage``                              service, resource
``degradation_features``                                    service, state
``degradation_shed_requests_total``                         service, priority
``degradation_events_total``                                service
``config_version`` / ``config_entries``                     service
``config_reloads_total`` / ``config_changes_total``         service
``config_rejected_changes_total``                           service, source
``client_requests_total``                                   service_type, outcome
==========================================================  ===========================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .metrics import Collector, MetricFamily, Registry, render

__all__ = [
    "BREAKER_STATES",
    "DEGRADATION_LEVELS",
    "breaker_families",
    "client_families",
    "config_families",
    "degradation_families",
    "discovery_families",
    "metrics_text",
    "register_components",
    "store_families",
]

P = "backend_services_"
BREAKER_STATES = ("closed", "open", "half_open", "disabled", "forced_open", "metrics_only")
DEGRADATION_LEVELS = ("normal", "partial", "minimal", "emergency", "offline")
_CLIENT_OUTCOMES = {"successes": "success", "failures": "failure"}


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _text(value: Any) -> str:
    inner = getattr(value, "value", value)
    return str(inner)


def _breakers(source: Any) -> list[Any]:
    if source is None:
        return []
    if hasattr(source, "breakers"):
        return list(source.breakers.values())
    if hasattr(source, "get_metrics"):
        return [source]
    if isinstance(source, Mapping):
        return list(source.values())
    return list(source)


def breaker_families(source: Any) -> list[MetricFamily]:
    """Families of circuit breakers: a registry (``.breakers``), one breaker, or an
    iterable or mapping of breakers."""
    calls = MetricFamily(P + "circuit_breaker_calls_total", "counter", "Calls by outcome.")
    slow = MetricFamily(P + "circuit_breaker_slow_calls_total", "counter", "Slow calls.")
    timeouts = MetricFamily(P + "circuit_breaker_timeouts_total", "counter", "Timed-out calls.")
    state = MetricFamily(
        P + "circuit_breaker_state", "gauge", "1 for the breaker's current state, else 0."
    )
    failure_rate = MetricFamily(
        P + "circuit_breaker_failure_rate", "gauge", "Failure rate over the window (0..1)."
    )
    slow_rate = MetricFamily(
        P + "circuit_breaker_slow_call_rate", "gauge", "Slow-call rate over the window (0..1)."
    )
    window = MetricFamily(P + "circuit_breaker_window_calls", "gauge", "Calls in the window.")
    openings = MetricFamily(P + "circuit_breaker_openings_total", "counter", "Times opened.")
    transitions = MetricFamily(
        P + "circuit_breaker_transitions_total", "counter", "State transitions."
    )
    for cb in _breakers(source):
        m = cb.get_metrics()
        name = str(m.get("name") or getattr(cb, "name", "?"))
        lab = {"circuit": name}
        for outcome, key in (
            ("success", "successful_calls"),
            ("failure", "failed_calls"),
            ("rejected", "rejected_calls"),
            ("ignored", "ignored_calls"),
            ("cancelled", "cancelled_calls"),
        ):
            v = _num(m.get(key))
            if v is not None:
                calls.add(v, {"circuit": name, "outcome": outcome})
        current = _text(m.get("circuit_state", getattr(cb, "state", "")))
        states = BREAKER_STATES if current in BREAKER_STATES else (*BREAKER_STATES, current)
        for s in states:
            state.add(1.0 if s == current else 0.0, {"circuit": name, "state": s})
        for fam, key in (
            (slow, "slow_calls"),
            (timeouts, "timeouts"),
            (failure_rate, "failure_rate"),
            (slow_rate, "slow_call_rate"),
            (openings, "openings"),
            (transitions, "state_transitions"),
        ):
            v = _num(m.get(key))
            if v is not None:
                fam.add(v, lab)
        w = m.get("window")
        if isinstance(w, Mapping) and _num(w.get("calls")) is not None:
            window.add(float(w["calls"]), lab)
    return [calls, slow, timeouts, state, failure_rate, slow_rate, window, openings, transitions]


def store_families(store: Any, component: str) -> list[MetricFamily]:
    """Connection state of one component's shared-state store (Redis or memory)."""
    connected = MetricFamily(
        P + "store_connected",
        "gauge",
        "1 while the preferred store backend answers (Redis when configured).",
    )
    outages = MetricFamily(P + "store_outages_total", "counter", "Times the backend was lost.")
    pending = MetricFamily(
        P + "store_pending_writes", "gauge", "Writes made during an outage, not yet replayed."
    )
    if store is None:
        return [connected, outages, pending]
    status = store.status()
    lab = {"component": component, "backend": str(getattr(status, "backend", "unknown"))}
    connected.add(bool(getattr(status, "connected", False)), lab)
    outages.add(float(getattr(status, "outages", 0)), lab)
    pending.add(float(getattr(status, "pending_writes", 0)), lab)
    return [connected, outages, pending]


def discovery_families(discovery: Any) -> list[MetricFamily]:
    """Families of a service discovery: instances by type and health, check latency,
    counters, propagation lag (age of the local view) and the store connection."""
    m: Mapping[str, Any] = discovery.get_metrics()
    instances = MetricFamily(P + "discovery_instances", "gauge", "Registered instances.")
    healthy = MetricFamily(P + "discovery_healthy_instances", "gauge", "Healthy instances.")
    up = MetricFamily(
        P + "discovery_instance_up", "gauge", "1 when the instance is healthy, else 0."
    )
    latency = MetricFamily(
        P + "discovery_health_check_latency_seconds",
        "gauge",
        "Duration of the instance's last health check.",
    )
    endpoints = getattr(discovery, "services", {}) or {}
    health = getattr(discovery, "service_health", {}) or {}
    by_type: dict[str, list[int]] = {}
    for sid, endpoint in list(endpoints.items()):
        stype = _text(getattr(endpoint, "service_type", "unknown"))
        h = health.get(sid)
        status = _text(getattr(h, "status", "unknown")) if h is not None else "unknown"
        counts = by_type.setdefault(stype, [0, 0])
        counts[0] += 1
        counts[1] += status == "healthy"
        lab = {"service_id": sid, "service_type": stype}
        up.add(status == "healthy", lab)
        rt = _num(getattr(h, "response_time_ms", None)) if h is not None else None
        if rt is not None:
            latency.add(rt / 1000.0, lab)
    for stype, (n, ok) in sorted(by_type.items()):
        instances.add(n, {"service_type": stype})
        healthy.add(ok, {"service_type": stype})
    out = [instances, healthy, up, latency]
    for key, name, kind, text in (
        ("health_checks", "discovery_health_checks_total", "counter", "Health checks run."),
        (
            "failed_health_checks",
            "discovery_failed_health_checks_total",
            "counter",
            "Health checks that failed.",
        ),
        ("discovery_requests", "discovery_requests_total", "counter", "Discovery lookups."),
        ("ejected_endpoints", "discovery_ejected_instances", "gauge", "Instances ejected now."),
        ("ejections", "discovery_ejections_total", "counter", "Outlier ejections."),
        ("self_preservation", "discovery_self_preservation", "gauge", "1 in self-preservation."),
        ("resyncs", "discovery_resyncs_total", "counter", "Full reloads of the shared view."),
        ("rejected_records", "discovery_rejected_records_total", "counter", "Invalid records."),
        ("store_errors", "discovery_store_errors_total", "counter", "Shared-state errors."),
        (
            "view_age_seconds",
            "discovery_view_age_seconds",
            "gauge",
            "Seconds since the local view last caught up with the shared state (propagation lag).",
        ),
    ):
        v = _num(m.get(key))
        if v is not None:
            out.append(MetricFamily(P + name, kind, text).add(v))  # type: ignore[arg-type]
    out += store_families(getattr(discovery, "store", None), "discovery")
    return out


def _managers(source: Any) -> list[Any]:
    if source is None:
        return []
    if hasattr(source, "service_managers"):
        return list(source.service_managers.values())
    if hasattr(source, "get_metrics"):
        return [source]
    if isinstance(source, Mapping):
        return list(source.values())
    return list(source)


def degradation_families(source: Any) -> list[MetricFamily]:
    """Families of degradation managers: one, a global manager
    (``.service_managers``), or an iterable or mapping of managers."""
    level = MetricFamily(
        P + "degradation_level", "gauge", "Degradation severity: 0 normal .. 4 offline."
    )
    state = MetricFamily(P + "degradation_state", "gauge", "1 for the current level, else 0.")
    usage = MetricFamily(
        P + "degradation_resource_usage", "gauge", "Resource usage as last sampled (0..1)."
    )
    features = MetricFamily(P + "degradation_features", "gauge", "Features enabled/disabled.")
    shed = MetricFamily(
        P + "degradation_shed_requests_total", "counter", "Requests refused by admission control."
    )
    events = MetricFamily(P + "degradation_events_total", "counter", "Level changes.")
    forced = MetricFamily(P + "degradation_forced", "gauge", "1 while a level is forced.")
    inflight = MetricFamily(P + "degradation_inflight", "gauge", "Requests admitted, running.")
    limit = MetricFamily(P + "degradation_concurrency_limit", "gauge", "Adaptive limit.")
    for mgr in _managers(source):
        m = mgr.get_metrics()
        service = str(getattr(mgr, "service_name", "?"))
        lab = {"service": service}
        current = _text(m.get("current_level", "normal"))
        if current in DEGRADATION_LEVELS:
            level.add(DEGRADATION_LEVELS.index(current), lab)
        for lv in DEGRADATION_LEVELS:
            state.add(lv == current, {"service": service, "level": lv})
        for resource, v in sorted((m.get("resource_usage") or {}).items()):
            if _num(v) is not None:
                usage.add(float(v), {"service": service, "resource": str(resource)})
        for key, st in (("enabled_features", "enabled"), ("disabled_features", "disabled")):
            if _num(m.get(key)) is not None:
                features.add(float(m[key]), {"service": service, "state": st})
        by_priority = m.get("shed_by_priority") or {}
        if by_priority:
            for priority, n in sorted(by_priority.items()):
                shed.add(float(n), {"service": service, "priority": _text(priority)})
        elif _num(m.get("shed_requests")) is not None:
            shed.add(float(m["shed_requests"]), {"service": service, "priority": "all"})
        for fam, key in (
            (events, "degradation_events"),
            (forced, "forced"),
            (inflight, "inflight"),
            (limit, "concurrency_limit"),
        ):
            v = _num(m.get(key))
            if v is not None:
                fam.add(v, lab)
    return [level, state, usage, features, shed, events, forced, inflight, limit]


def config_families(source: Any) -> list[MetricFamily]:
    """Families of configuration managers (one, or an iterable): version in force,
    reloads, rejected changes (by source), applied changes, conflicts, entries and the
    store connection — read from ``get_metrics()``."""
    version = MetricFamily(
        P + "config_version", "gauge", "Number of the configuration version in force."
    )
    reloads = MetricFamily(P + "config_reloads_total", "counter", "Configuration file reloads.")
    rejected = MetricFamily(
        P + "config_rejected_changes_total",
        "counter",
        "Changes refused by validation (api: set/import/rollback; file: a bad file).",
    )
    entries = MetricFamily(P + "config_entries", "gauge", "Configuration keys in force.")
    changes = MetricFamily(P + "config_changes_total", "counter", "Changes applied.")
    conflicts = MetricFamily(
        P + "config_conflicts_total", "counter", "Concurrent commits that lost and retried."
    )
    connected = MetricFamily(
        P + "store_connected",
        "gauge",
        "1 while the preferred store backend answers (Redis when configured).",
    )
    managers = [source] if hasattr(source, "get_metrics") else list(source or [])
    for mgr in managers:
        m = mgr.get_metrics()
        service = str(getattr(mgr, "service_name", m.get("service_name", "?")))
        lab = {"service": service}
        for fam, key in (
            (version, "version"),
            (reloads, "file_reloads"),
            (entries, "total_keys"),
            (changes, "changes_applied"),
            (conflicts, "conflicts"),
        ):
            v = _num(m.get(key))
            if v is not None:
                fam.add(v, lab)
        for src, key in (("api", "validation_failures"), ("file", "file_rejections")):
            v = _num(m.get(key))
            if v is not None:
                rejected.add(v, {"service": service, "source": src})
        if "store_connected" in m:
            backend = str(m.get("store_backend", "unknown"))
            connected.add(
                bool(m["store_connected"]), {"component": f"config:{service}", "backend": backend}
            )
    return [version, reloads, rejected, entries, changes, conflicts, connected]


def client_families(clients: Any) -> list[MetricFamily]:
    """Families of resilient service clients (``get_metrics()`` counters)."""
    requests = MetricFamily(P + "client_requests_total", "counter", "Requests by outcome.")
    other = MetricFamily(
        P + "client_events_total", "counter", "Attempts, retries, rejections, fallbacks."
    )
    items = [clients] if hasattr(clients, "get_metrics") else list(clients or [])
    for client in items:
        m = client.get_metrics()
        stype = _text(getattr(client, "service_type", "any"))
        for key, v in sorted(m.items()):
            n = _num(v)
            if n is None:
                continue
            if key in _CLIENT_OUTCOMES:
                requests.add(n, {"service_type": stype, "outcome": _CLIENT_OUTCOMES[key]})
            elif key != "requests":
                other.add(n, {"service_type": stype, "event": key})
    return [requests, other]


def register_components(
    registry: Registry,
    *,
    breakers: Any = None,
    discovery: Any = None,
    degradation: Any = None,
    config: Any = None,
    clients: Any = None,
) -> list[Collector]:
    """Register lazy collectors for the given components (any may be omitted); returns
    them, for :meth:`Registry.unregister`."""
    parts: list[tuple[Any, Callable[[Any], list[MetricFamily]]]] = [
        (breakers, breaker_families),
        (discovery, discovery_families),
        (degradation, degradation_families),
        (config, config_families),
        (clients, client_families),
    ]
    added: list[Collector] = []
    for component, build in parts:
        if component is None:
            continue

        def collect(
            component: Any = component, build: Callable[[Any], list[MetricFamily]] = build
        ) -> Iterable[MetricFamily]:
            return build(component)

        added.append(registry.register_collector(collect))
    return added


def metrics_text(
    registry: Registry | None = None,
    *,
    breakers: Any = None,
    discovery: Any = None,
    degradation: Any = None,
    config: Any = None,
    clients: Any = None,
) -> str:
    """The Prometheus text of ``registry`` (the process's own instruments) plus the given
    components, built now — one call for a ``/metrics`` handler."""
    reg = Registry()
    families: list[MetricFamily] = list(registry.collect()) if registry is not None else []
    register_components(
        reg,
        breakers=breakers,
        discovery=discovery,
        degradation=degradation,
        config=config,
        clients=clients,
    )
    return render(families + reg.collect())
