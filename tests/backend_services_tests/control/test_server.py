"""The control server over real HTTP: API, auth, CSRF, rate limits, problems, SSE, pages."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import aiohttp
import pytest

from backend_services.control.security import CSP
from backend_services.testing import FakeClock

from ..observability.promtext import parse, value
from .conftest import TOKEN, StartServer
from .fleet import CONFIG_SERVICE, Fleet

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _problem(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    doc: dict[str, Any] = await resp.json(content_type=None)
    assert doc["status"] == status
    assert doc["title"]
    assert doc["detail"]
    return doc


# --- reading -------------------------------------------------------------------------


async def test_lists_services_circuits_degradation_and_config(
    start_server: StartServer, http: aiohttp.ClientSession, fleet: Fleet
) -> None:
    """The read endpoints return the fleet as JSON, with filters applied."""
    server = await start_server()
    base = server.url + "/api/v1"
    async with http.get(base + "/services", params={"status": "healthy"}) as resp:
        services = await resp.json()
    assert sorted(s["service_id"] for s in services) == ["membrane-1", "membrane-2"]
    async with http.get(base + "/services", params={"service_type": "cache_service"}) as resp:
        assert await resp.json() == []
    async with http.get(base + "/services/membrane-2") as resp:
        assert (await resp.json())["address"] == f"127.0.0.1:{fleet.servers[1].port}"
    async with http.get(base + "/circuits") as resp:
        assert {c["name"]: c["state"] for c in await resp.json()} == {
            "membrane-1": "closed",
            "membrane-2": "closed",
        }
    async with http.get(base + f"/degradation/{CONFIG_SERVICE}") as resp:
        assert (await resp.json())["level"] == "normal"
    async with http.get(base + "/config") as resp:
        doc = await resp.json()
    assert doc["values"] == {"membrane_depth": 4, "processing_timeout": 30.0}
    assert doc["version"] == 2


async def test_unknown_items_are_404_problems(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """Unknown services, circuits, routes and versions give 404 problem documents."""
    server = await start_server(token=TOKEN)
    base = server.url + "/api/v1"
    doc = await _problem(await http.get(base + "/services/nope"), 404)
    assert "nope" in doc["detail"]
    await _problem(await http.get(base + "/circuits/nope"), 404)
    await _problem(await http.get(base + "/degradation/nope"), 404)
    await _problem(await http.get(server.url + "/no/such/route"), 404)
    await _problem(await http.get(base + "/config/diff", params={"from": "v99"}), 404)
    await _problem(
        await http.post(base + "/config/rollback", headers=AUTH, json={"version": "v99"}), 404
    )


async def test_wrong_method_is_a_405_problem_with_allow(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """A wrong method is a 405 problem that says which methods are allowed."""
    server = await start_server()
    resp = await http.delete(server.url + "/api/v1/services")
    await _problem(resp, 405)
    assert "GET" in resp.headers["Allow"]


# --- changing ------------------------------------------------------------------------


async def test_mutations_with_the_token_change_the_fleet(
    start_server: StartServer, http: aiohttp.ClientSession, fleet: Fleet
) -> None:
    """With the token, circuits, degradation and config change fleet-wide: the running
    components see it."""
    server = await start_server(token=TOKEN)
    base = server.url + "/api/v1"
    async with http.post(base + "/circuits/membrane-1/open", headers=AUTH, json={}) as resp:
        assert (await resp.json())["state"] == "forced_open"
    async with http.post(
        base + "/degradation/fleet/force",
        headers=AUTH,
        json={"level": "minimal", "reason": "drill", "duration": 60},
    ) as resp:
        forced = await resp.json()
    assert (forced["level"], forced["reason"]) == ("minimal", "drill")
    v2 = (await fleet.versions())[-1]["id"]
    async with http.put(
        base + "/config/values/membrane_depth", headers=AUTH, json={"value": 2}
    ) as resp:
        assert (await resp.json())["version"] == 3
    async with http.get(base + "/config/diff", params={"from": v2}) as resp:
        diff = await resp.json()
    assert diff["changed"] == {"membrane_depth": {"old": 4, "new": 2}}
    assert diff["added"] == diff["removed"] == {}
    async with http.post(base + "/config/rollback", headers=AUTH, json={"version": v2}) as resp:
        assert (await resp.json())["version"] == 4
    async with http.get(base + "/config/values/membrane_depth") as resp:
        assert (await resp.json())["value"] == 4
    for _ in range(100):  # the running breaker follows the fleet's shared state
        if fleet.breakers["membrane-1"].state.value == "forced_open":
            break
        await asyncio.sleep(0.01)
    assert fleet.breakers["membrane-1"].state.value == "forced_open"


async def test_component_validation_errors_are_422_problems(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """A value the component rejects is a 422 naming the field and the expectation."""
    server = await start_server(token=TOKEN)
    deep: object = 1
    for _ in range(70):
        deep = [deep]
    resp = await http.put(
        server.url + "/api/v1/config/values/membrane_depth", headers=AUTH, json={"value": deep}
    )
    doc = await _problem(resp, 422)
    assert doc["field"] == "membrane_depth"
    assert "nesting" in doc["expected"]


async def test_one_service_level_is_forced_and_cleared_with_the_token(
    start_server: StartServer, http: aiohttp.ClientSession, fleet: Fleet
) -> None:
    """Per-service force/clear needs the token; with it, the running manager of that
    service takes the level and hands back on clear, and no fleet-wide override is set."""
    server = await start_server(token=TOKEN)
    base = server.url + f"/api/v1/degradation/{CONFIG_SERVICE}"
    manager = fleet.degradation

    async def level_becomes(level: str) -> None:
        for _ in range(200):  # the running manager follows the store's change feed
            if manager.current_level.value == level:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"level stayed {manager.current_level.value}, not {level}")

    await _problem(await http.post(base + "/force", json={"level": "partial"}), 401)
    async with http.post(
        base + "/force", headers=AUTH, json={"level": "partial", "reason": "canary"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        forced = await resp.json()
    assert (forced["service"], forced["level"], forced["reason"]) == (
        CONFIG_SERVICE,
        "partial",
        "canary",
    )
    await level_becomes("partial")
    async with http.get(base) as resp:
        assert (await resp.json())["level"] == "partial"
    status = await fleet.ops.degradation_status()
    assert status["fleet_override"] is None
    assert list(status["service_overrides"]) == [CONFIG_SERVICE]
    await _problem(await http.post(base + "/clear", json={}), 401)
    async with http.post(base + "/clear", headers=AUTH, json={"reason": "done"}) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"service": CONFIG_SERVICE, "cleared": True}
    await level_becomes("normal")


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b"level=partial", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "JSON"),
        (b'{"level": "worst"}', {"Content-Type": "application/json"}, 422, "body.level"),
        (b'{"level": NaN}', {"Content-Type": "application/json"}, 400, "NaN"),
        (b"[]", {"Content-Type": "application/json"}, 422, "object"),
        (b"", {}, 422, "JSON object body"),
    ],
)
async def test_bad_bodies_are_clear_4xx_problems(
    start_server: StartServer,
    http: aiohttp.ClientSession,
    body: bytes,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    """Malformed, mistyped and invalid bodies give 400/415/422 with a clear detail."""
    server = await start_server(token=TOKEN)
    resp = await http.post(
        server.url + "/api/v1/degradation/fleet/force",
        data=body,
        headers={**AUTH, **headers},
    )
    doc = await _problem(resp, status)
    assert words in doc["detail"]


async def test_oversized_bodies_are_413_problems(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """A body above the size limit is refused with 413, not read into memory."""
    server = await start_server(token=TOKEN)
    resp = await http.put(
        server.url + "/api/v1/config/values/blob",
        data=json.dumps({"value": "x" * 200_000}),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    await _problem(resp, 413)


async def test_invalid_parameters_are_422_problems(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """Query and path parameters are validated (type, range, pattern)."""
    server = await start_server()
    base = server.url + "/api/v1"
    doc = await _problem(await http.get(base + "/transitions", params={"limit": "lots"}), 422)
    assert doc["field"] == "query.limit"
    await _problem(await http.get(base + "/config/versions", params={"limit": "0"}), 422)
    await _problem(await http.get(base + "/config/diff"), 422)
    await _problem(await http.get(base + "/config/values/..bad"), 422)


# --- authentication and cross-site protection ----------------------------------------


async def test_mutations_need_the_bearer_token(
    start_server: StartServer, http: aiohttp.ClientSession, fleet: Fleet
) -> None:
    """No header or a wrong token is 401 with a Bearer challenge; nothing changes."""
    server = await start_server(token=TOKEN)
    url = server.url + "/api/v1/circuits/membrane-1/open"
    resp = await http.post(url)
    await _problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await http.post(url, headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
    assert "invalid_token" in resp.headers["WWW-Authenticate"]
    await _problem(resp, 401)
    await _problem(await http.post(url, headers={"Authorization": f"Basic {TOKEN}"}), 401)
    assert (await fleet.ops.get_circuit("membrane-1") or {})["state"] == "closed"


async def test_without_a_configured_token_mutations_are_disabled(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """A server started without a token refuses every change, saying how to enable it."""
    server = await start_server()
    doc = await _problem(await http.post(server.url + "/api/v1/circuits/membrane-1/reset"), 403)
    assert "DTESN_CONTROL_TOKEN" in doc["detail"]


async def test_cross_site_mutations_are_refused(
    start_server: StartServer, http: aiohttp.ClientSession, fleet: Fleet
) -> None:
    """Another Origin, or a browser saying cross-site, is refused even with the token."""
    server = await start_server(token=TOKEN)
    url = server.url + "/api/v1/circuits/membrane-1/open"
    resp = await http.post(url, headers={**AUTH, "Origin": "http://evil.example"})
    assert "evil.example" in (await _problem(resp, 403))["detail"]
    resp = await http.post(url, headers={**AUTH, "Sec-Fetch-Site": "cross-site"})
    await _problem(resp, 403)
    assert (await fleet.ops.get_circuit("membrane-1") or {})["state"] == "closed"
    same = await http.post(
        url, headers={**AUTH, "Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    )
    assert same.status == 200


async def test_reads_can_be_protected(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """With protect_reads, reads need the token too; /healthz stays open."""
    server = await start_server(token=TOKEN, protect_reads=True)
    await _problem(await http.get(server.url + "/api/v1/services"), 401)
    async with http.get(server.url + "/api/v1/services", headers=AUTH) as resp:
        assert resp.status == 200
    async with http.get(server.url + "/healthz") as resp:
        assert resp.status == 200


async def test_the_token_never_reaches_the_logs(
    start_server: StartServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither a right nor a wrong token appears in any log record."""
    caplog.set_level(logging.DEBUG)
    server = await start_server(token=TOKEN)
    wrong = "wrong-token-value-0123456789"
    await http.post(server.url + "/api/v1/circuits/membrane-1/open", headers=AUTH)
    await http.post(
        server.url + "/api/v1/circuits/membrane-1/open",
        headers={"Authorization": f"Bearer {wrong}"},
    )
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert TOKEN not in text
        assert wrong not in text


# --- rate limiting -------------------------------------------------------------------


async def test_rate_limit_gives_429_with_retry_after_until_time_passes(
    start_server: StartServer, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """Past its burst a client gets 429 + Retry-After; after the wait it is served again."""
    server = await start_server(rate=0.5, burst=3)
    url = server.url + "/api/v1/circuits"
    for _ in range(3):
        async with http.get(url) as resp:
            assert resp.status == 200
    resp = await http.get(url)
    doc = await _problem(resp, 429)
    assert resp.headers["Retry-After"] == "2"
    assert doc["retry_after"] == 2
    await clock.advance(2.0)
    async with http.get(url) as resp:
        assert resp.status == 200


# --- pages, headers, metrics ---------------------------------------------------------


async def test_every_response_carries_the_security_headers(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """Pages, API answers, static files and errors all carry the strict CSP and friends."""
    server = await start_server()
    for path in ("/", "/static/app.js", "/api/v1/services", "/nope", "/openapi.json"):
        async with http.get(server.url + path) as resp:
            assert resp.headers["Content-Security-Policy"] == CSP, path
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in CSP
    assert "unsafe-inline" not in CSP


async def test_dashboard_page_has_no_inline_script_or_style(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """The page loads scripts from files only: no inline code, handlers or styles."""
    server = await start_server()
    async with http.get(server.url + "/") as resp:
        assert resp.content_type == "text/html"
        html = await resp.text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts
    assert all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", html)
    assert not re.search(r"\sstyle=", html)
    assert "<style" not in html
    for asset in ("static/app.js", "static/style.css", "static/vendor/chart.umd.min.js"):
        assert asset in html or asset.endswith("chart.umd.min.js")
        async with http.get(server.url + "/" + asset) as resp:
            assert resp.status == 200, asset


async def test_chart_library_ships_with_its_license(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """The vendored Chart.js build and its MIT license are served from the package."""
    server = await start_server()
    async with http.get(server.url + "/static/vendor/chart.umd.min.js") as resp:
        head = (await resp.text())[:200]
    assert "Chart.js v4" in head
    async with http.get(server.url + "/static/vendor/chart.js.LICENSE.md") as resp:
        assert "MIT License" in await resp.text()


async def test_openapi_document_is_served(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """/openapi.json is an OpenAPI 3 document describing the served operations."""
    server = await start_server()
    async with http.get(server.url + "/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/circuits/{name}/open" in doc["paths"]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


async def test_metrics_page_has_server_and_fleet_metrics(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """/metrics is Prometheus text with the server's counters and the fleet as the
    server last saw it (instances by status, circuit states, levels, config version)."""
    server = await start_server()
    await http.get(server.url + "/api/v1/services")
    async with http.get(server.url + "/metrics") as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        fams = parse(await resp.text())
    assert (
        value(
            fams, "backend_services_control_requests_total", operation="listServices", status="200"
        )
        == 1
    )
    assert (
        value(
            fams,
            "backend_services_fleet_instances",
            service_type="dtesn_membrane",
            status="healthy",
        )
        == 2
    )
    assert (
        value(fams, "backend_services_fleet_circuit_state", circuit="membrane-1", state="closed")
        == 1
    )
    assert value(fams, "backend_services_fleet_degradation_level", service=CONFIG_SERVICE) == 0
    assert value(fams, "backend_services_fleet_config_version", service=CONFIG_SERVICE) == 2


async def test_unexpected_failures_are_500_problems_without_internals(
    start_server: StartServer,
    http: aiohttp.ClientSession,
    fleet: Fleet,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash inside the service layer is a generic 500 problem; details go to the log."""
    server = await start_server()

    async def broken(*args: object, **kwargs: object) -> list[dict[str, object]]:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(fleet.ops, "list_services", broken)
    resp = await http.get(server.url + "/api/v1/services")
    doc = await _problem(resp, 500)
    assert "secret internal detail" not in json.dumps(doc)
    assert any("secret internal detail" in repr(r.__dict__) for r in caplog.records)


# --- live events ---------------------------------------------------------------------


async def _next_event(resp: aiohttp.ClientResponse) -> tuple[str, Any]:
    event, data = "message", []
    while True:
        raw = await asyncio.wait_for(resp.content.readline(), 10)
        assert raw, "stream ended"
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                return event, json.loads("\n".join(data))
            continue
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


async def test_event_stream_sends_a_snapshot_then_each_change(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """SSE sends a snapshot on connect, then a new one with the transition after a change."""
    server = await start_server(token=TOKEN)
    async with http.get(server.url + "/api/v1/events") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        event, first = await _next_event(stream)
        assert event == "snapshot"
        assert {c["name"] for c in first["circuits"]} == {"membrane-1", "membrane-2"}
        async with http.post(server.url + "/api/v1/circuits/membrane-2/open", headers=AUTH):
            pass
        event, second = await _next_event(stream)
        assert event == "snapshot"
    states = {c["name"]: c["state"] for c in second["circuits"]}
    assert states["membrane-2"] == "forced_open"
    assert any(
        t["kind"] == "circuit" and t["name"] == "membrane-2" and t["new"] == "forced_open"
        for t in second["transitions"]
    )


async def test_watcher_polls_on_its_clock(
    start_server: StartServer, http: aiohttp.ClientSession, fleet: Fleet, clock: FakeClock
) -> None:
    """A change made by a fleet member is picked up after one watch interval."""
    server = await start_server(watch_interval=2.0)
    async with http.get(server.url + "/api/v1/events") as stream:
        await _next_event(stream)
        await fleet.breakers["membrane-2"].force_state("forced_open")
        await clock.advance(2.0)
        _, snap = await _next_event(stream)
    assert {c["name"]: c["state"] for c in snap["circuits"]}["membrane-2"] == "forced_open"
    async with http.get(server.url + "/api/v1/transitions", params={"limit": "1"}) as resp:
        (last,) = await resp.json()
    assert (last["kind"], last["name"], last["old"], last["new"]) == (
        "circuit",
        "membrane-2",
        "closed",
        "forced_open",
    )


async def test_event_streams_are_limited_per_client_and_end_on_close(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """Past the per-client stream limit a client gets 429; closing ends open streams."""
    server = await start_server(max_streams_per_client=1)
    stream = await http.get(server.url + "/api/v1/events")
    await _next_event(stream)
    await _problem(await http.get(server.url + "/api/v1/events"), 429)
    await asyncio.wait_for(server.close(), 10)
    rest = await asyncio.wait_for(stream.content.read(), 10)
    assert b"event: snapshot" not in rest
    stream.close()
