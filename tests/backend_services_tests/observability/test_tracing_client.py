"""ServiceClient spans: the request path as a span tree, trace context sent to real
servers, retry spans after a failing replica, and nothing at all when tracing is off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiohttp import web

from backend_services.client import ServiceClient
from backend_services.discovery.model import ServiceEndpoint, ServiceType
from backend_services.errors import ServiceUnavailableError
from backend_services.infrastructure.service_discovery import ServiceDiscovery
from backend_services.observability import tracing

from ..discovery.servers import free_port

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

T = ServiceType.DTESN_MEMBRANE


class HeaderServer:
    """A real aiohttp server (with the tracing middleware) that records the headers of
    each non-health request; ``failing`` makes it answer 503."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.failing = False
        self.seen: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _work(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        if self.failing:
            return web.Response(status=503, text="unavailable")
        return web.json_response({"server": self.name})

    async def start(self) -> HeaderServer:
        app = web.Application(middlewares=[tracing.tracing_middleware])
        app.router.add_get("/health", self._health)
        app.router.add_route("*", "/work", self._work)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


class Fleet:
    def __init__(self, discovery: ServiceDiscovery) -> None:
        self.discovery = discovery
        self.servers: list[HeaderServer] = []

    async def add(self, name: str) -> HeaderServer:
        server = await HeaderServer(name).start()
        self.servers.append(server)
        await self.discovery.register_service(ServiceEndpoint(name, T, "127.0.0.1", server.port))
        deadline = time.monotonic() + 5.0
        while name not in {e.service_id for e in self.discovery.usable_endpoints(T)[0]}:
            assert time.monotonic() < deadline, f"{name} did not become usable"
            await asyncio.sleep(0.01)  # a real health check over the network
        return server


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    """Real discovery (in memory) in front of real header-recording servers."""
    discovery = ServiceDiscovery(redis_url=None, health_check_interval=60.0)
    await discovery.initialize()
    f = Fleet(discovery)
    try:
        yield f
    finally:
        await discovery.shutdown()
        for server in f.servers:
            await server.stop()


def client_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The finished spans of the request path (server spans left out)."""
    return [
        s
        for s in exporter.get_finished_spans()
        if s.name.startswith("backend_services.") and s.kind is not SpanKind.SERVER
    ]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """The spans whose parent is ``parent``, in start order."""
    out = [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return sorted(out, key=lambda s: s.start_time or 0)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_request_is_a_span_tree_and_the_server_continues_the_trace(
    fleet: Fleet, exporter: InMemorySpanExporter
) -> None:
    """One request: request > discover, pick, breaker > call; the server gets a
    traceparent of the same trace and its span is a child of the call span."""
    server = await fleet.add("a")
    exporter.clear()
    async with ServiceClient(fleet.discovery, T) as client:
        response = await client.request("GET", "/work")
    assert response.status == 200
    spans = client_spans(exporter)
    (root,) = [s for s in spans if s.name == tracing.SPAN_REQUEST]
    assert root.parent is None
    assert attrs(root) == {
        "service.type": T.value,
        "http.request.method": "GET",
        "url.path": "/work",
        "outcome": "success",
        "endpoint.id": "a",
        "endpoints.tried": 1,
    }
    steps = children(spans, root)
    assert [s.name for s in steps] == [
        tracing.SPAN_DISCOVER,
        tracing.SPAN_PICK,
        tracing.SPAN_BREAKER,
    ]
    discover, pick, breaker = steps
    assert attrs(discover)["endpoints.usable"] == 1
    assert attrs(pick)["endpoint.id"] == "a"
    assert attrs(breaker) == {"attempt": 1, "endpoint.id": "a", "outcome": "success"}
    (call,) = children(spans, breaker)
    assert call.name == tracing.SPAN_CALL
    assert attrs(call)["http.response.status_code"] == 200
    assert attrs(call)["server.port"] == server.port
    trace_hex = f"{root.context.trace_id:032x}"
    (headers,) = server.seen
    _, trace_id, parent_id, _ = headers["traceparent"].split("-")
    assert trace_id == trace_hex
    assert parent_id == f"{call.context.span_id:016x}"
    (served,) = [s for s in exporter.get_finished_spans() if s.name == "GET /work"]
    assert served.kind is SpanKind.SERVER
    assert served.parent is not None
    assert served.parent.span_id == call.context.span_id


async def test_retry_after_a_failing_replica_has_a_retry_span(
    fleet: Fleet, exporter: InMemorySpanExporter
) -> None:
    """A 503 from one replica ends its breaker span as a failure; the next attempt is a
    retry span (attempt 2) whose call succeeds on the other replica, in the same trace."""
    bad = await fleet.add("bad")
    good = await fleet.add("good")
    bad.failing = True
    exporter.clear()
    async with ServiceClient(fleet.discovery, T, balancer="round_robin") as client:
        for _ in range(4):  # round robin: some request starts on the failing replica
            assert (await client.request("GET", "/work")).json() == {"server": "good"}
    spans = client_spans(exporter)
    retries = [s for s in spans if s.name == tracing.SPAN_RETRY]
    assert retries
    retry = retries[0]
    assert attrs(retry) == {
        "attempt": 2,
        "retry.attempt": 2,
        "endpoint.id": "good",
        "outcome": "success",
    }
    (root,) = [
        s
        for s in spans
        if s.name == tracing.SPAN_REQUEST and s.context.span_id == retry.parent.span_id  # type: ignore[union-attr]
    ]
    assert attrs(root)["endpoints.tried"] == 2
    (failed,) = [s for s in children(spans, root) if s.name == tracing.SPAN_BREAKER]
    assert attrs(failed)["outcome"] == "failure"
    assert attrs(failed)["endpoint.id"] == "bad"
    assert failed.status.status_code is StatusCode.ERROR
    (failed_call,) = children(spans, failed)
    assert attrs(failed_call)["http.response.status_code"] == 503
    (retried_call,) = children(spans, retry)
    assert attrs(retried_call)["http.response.status_code"] == 200
    # both replicas saw the same trace
    trace_hex = f"{root.context.trace_id:032x}"
    assert any(h["traceparent"].split("-")[1] == trace_hex for h in bad.seen)
    assert any(h["traceparent"].split("-")[1] == trace_hex for h in good.seen)


async def test_tracing_switched_off_records_nothing_and_sends_no_traceparent(
    fleet: Fleet, exporter: InMemorySpanExporter
) -> None:
    """With tracing off (provider configured, switch off) no span is recorded and the
    server receives no traceparent header."""
    server = await fleet.add("a")
    tracing.set_enabled(False)
    exporter.clear()
    async with ServiceClient(fleet.discovery, T) as client:
        assert (await client.request("GET", "/work")).status == 200
        assert await client.call(lambda endpoint: asyncio.sleep(0, endpoint.service_id)) == "a"
    assert exporter.get_finished_spans() == ()
    assert "traceparent" not in server.seen[0]


async def test_without_a_provider_nothing_is_sent(fleet: Fleet) -> None:
    """With OpenTelemetry installed but no provider configured, requests carry no
    trace context."""
    server = await fleet.add("a")
    assert not tracing.enabled()
    async with ServiceClient(fleet.discovery, T) as client:
        assert (await client.request("GET", "/work")).status == 200
    assert "traceparent" not in server.seen[0]


async def test_caller_headers_are_kept_and_not_modified(
    fleet: Fleet, exporter: InMemorySpanExporter
) -> None:
    """The caller's headers go out with the traceparent added to a copy; the caller's
    dict is left as it was."""
    server = await fleet.add("a")
    mine = {"X-Caller": "r-1"}
    async with ServiceClient(fleet.discovery, T) as client:
        await client.request("POST", "/work", headers=mine, json={"x": 1})
    assert mine == {"X-Caller": "r-1"}
    assert server.seen[0]["X-Caller"] == "r-1"
    assert "traceparent" in server.seen[0]


async def test_generic_operation_runs_in_a_call_span(
    fleet: Fleet, exporter: InMemorySpanExporter
) -> None:
    """``call(operation)`` puts the operation in a call span under the breaker span,
    inside which the operation sees the request's trace."""
    await fleet.add("a")
    exporter.clear()
    seen: list[dict[str, str]] = []

    async def operation(endpoint: ServiceEndpoint) -> str:
        seen.append(dict(tracing.trace_headers()))
        return endpoint.service_id

    async with ServiceClient(fleet.discovery, T) as client:
        assert await client.call(operation) == "a"
    spans = client_spans(exporter)
    (root,) = [s for s in spans if s.name == tracing.SPAN_REQUEST]
    assert attrs(root)["service.type"] == T.value
    (breaker,) = [s for s in children(spans, root) if s.name == tracing.SPAN_BREAKER]
    (call,) = children(spans, breaker)
    assert call.name == tracing.SPAN_CALL
    assert attrs(call)["endpoint.id"] == "a"
    assert seen[0]["traceparent"].split("-")[2] == f"{call.context.span_id:016x}"


async def test_no_endpoint_marks_the_request_unavailable(
    fleet: Fleet, exporter: InMemorySpanExporter
) -> None:
    """With nothing registered the request span ends in error with the outcome
    ``unavailable``, after discover and pick and without a breaker span."""
    async with ServiceClient(fleet.discovery, T) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.request("GET", "/work")
    spans = client_spans(exporter)
    (root,) = [s for s in spans if s.name == tracing.SPAN_REQUEST]
    assert attrs(root)["outcome"] == "unavailable"
    assert root.status.status_code is StatusCode.ERROR
    assert [s.name for s in children(spans, root)] == [tracing.SPAN_DISCOVER, tracing.SPAN_PICK]


async def test_fallback_outcome_is_recorded(fleet: Fleet, exporter: InMemorySpanExporter) -> None:
    """A call answered by the fallback ends its request span with outcome ``fallback``."""
    async with ServiceClient(fleet.discovery, T, fallback=lambda *a, **k: "fb") as client:
        assert await client.call(lambda endpoint: asyncio.sleep(0, "x")) == "fb"
    (root,) = [s for s in client_spans(exporter) if s.name == tracing.SPAN_REQUEST]
    assert attrs(root)["outcome"] == "fallback"
    assert root.status.status_code is not StatusCode.ERROR
