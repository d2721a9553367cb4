"""OpenTelemetry spans and W3C trace-context propagation, and the no-op when absent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from backend_services.observability import tracing

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind


@pytest.fixture
async def traced_server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A real aiohttp server with the tracing middleware; records request headers."""
    seen: list[dict[str, str]] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[tracing.tracing_middleware])
    app.router.add_get("/process", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def test_request_path_spans_nest_under_the_request(exporter: InMemorySpanExporter) -> None:
    """Discover, pick, breaker, call and retry spans are children of the request span."""
    with tracing.span(tracing.SPAN_REQUEST, {"service.type": "dtesn_membrane"}):
        for name in (tracing.SPAN_DISCOVER, tracing.SPAN_PICK, tracing.SPAN_BREAKER):
            with tracing.span(name, {"attempt": 1, "skip": None}):
                pass
        with (
            tracing.span(tracing.SPAN_RETRY, {"retry.attempt": 2}),
            tracing.span(tracing.SPAN_CALL),
        ):
            pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans[tracing.SPAN_REQUEST]
    assert root.parent is None
    for name in (tracing.SPAN_DISCOVER, tracing.SPAN_PICK, tracing.SPAN_BREAKER):
        assert spans[name].parent is not None
        assert spans[name].parent.span_id == root.context.span_id
        assert "skip" not in (spans[name].attributes or {})
    assert spans[tracing.SPAN_CALL].parent.span_id == spans[tracing.SPAN_RETRY].context.span_id
    assert root.attributes == {"service.type": "dtesn_membrane"}


def test_exceptions_are_recorded_on_the_span(exporter: InMemorySpanExporter) -> None:
    """An exception leaving a span marks it as an error with the exception event."""
    with pytest.raises(ConnectionError), tracing.span(tracing.SPAN_CALL):
        raise ConnectionError("refused")
    (span,) = exporter.get_finished_spans()
    assert not span.status.is_ok
    assert any(e.name == "exception" for e in span.events)


async def test_trace_context_reaches_the_service_over_http(
    exporter: InMemorySpanExporter, traced_server: tuple[str, list[dict[str, str]]]
) -> None:
    """The traceparent header carries the call's context to a real server, whose
    middleware continues the same trace in a server span under the call span."""
    base, seen = traced_server
    async with aiohttp.ClientSession() as session:
        with tracing.span(tracing.SPAN_CALL) as call:
            async with session.get(base + "/process", headers=tracing.trace_headers()) as resp:
                assert resp.status == 200
            call_ctx = call.get_span_context()
    trace_hex = f"{call_ctx.trace_id:032x}"
    assert seen[0]["traceparent"].split("-")[1] == trace_hex
    server = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert server.name == "GET /process"
    assert server.context.trace_id == call_ctx.trace_id
    assert server.parent is not None
    assert server.parent.span_id == call_ctx.span_id
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200


async def test_http_errors_are_tagged_with_their_status(
    exporter: InMemorySpanExporter,
) -> None:
    """A handler raising an HTTP error still ends its server span with the status."""

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application(middlewares=[tracing.tracing_middleware])
    app.router.add_get("/x", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/x") as resp,
        ):
            assert resp.status == 404
    finally:
        await runner.cleanup()
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 404


def test_switched_off_tracing_is_a_shared_no_op(exporter: InMemorySpanExporter) -> None:
    """With tracing switched off, span() is the shared no-op and nothing is recorded
    or injected."""
    tracing.set_enabled(False)
    assert not tracing.enabled()
    cm = tracing.span(tracing.SPAN_CALL, {"a": 1})
    assert cm is tracing.NOOP_SPAN
    with cm as s:
        s.set_attribute("k", "v")
        s.record_exception(ValueError("x"))
        assert not s.is_recording()
    assert tracing.trace_headers() == {}
    parent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    assert tracing.extract_context({"traceparent": parent}) is None
    assert tracing.server_span("GET /", {}) is tracing.NOOP_SPAN
    assert exporter.get_finished_spans() == ()


def test_without_a_configured_provider_nothing_is_recorded() -> None:
    """With the API installed but no SDK provider configured, spans are no-ops."""
    tracing.set_tracer_provider(None)
    assert tracing.AVAILABLE
    assert not tracing.enabled()
    assert tracing.span(tracing.SPAN_PICK) is tracing.NOOP_SPAN
    headers: dict[str, Any] = {"x": "1"}
    assert tracing.trace_headers(headers) == {"x": "1"}
