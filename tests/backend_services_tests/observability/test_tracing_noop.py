"""Tracing without OpenTelemetry installed: the module loads and costs nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_without_opentelemetry_installed_everything_is_a_no_op() -> None:
    """In a process where OpenTelemetry cannot be imported, the module still loads,
    reports it is unavailable, and its span, headers and middleware do nothing."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["opentelemetry"] = None
        from aiohttp import web
        from aiohttp.test_utils import make_mocked_request
        from backend_services.observability import tracing
        assert tracing.AVAILABLE is False
        assert tracing.enabled() is False
        assert tracing.span("x") is tracing.NOOP_SPAN
        assert tracing.trace_headers() == {}
        async def handler(request):
            return web.Response(text="ok")
        async def main():
            resp = await tracing.tracing_middleware(make_mocked_request("GET", "/"), handler)
            assert resp.text == "ok"
        asyncio.run(main())
        print("no-op ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "no-op ok" in out.stdout
