"""The dashboard in a real headless Chromium (from the OS packages): a membrane process the
test starts appears, its circuit shows open after the test kills it; live updates, the
config diff and the rollback action behind the token, kept out of URLs and storage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from backend_services.client import ServiceClient
from backend_services.control.operations import FleetOperations
from backend_services.control.server import ControlServer
from backend_services.dtesn.process import MembraneProcess
from backend_services.errors import ServiceUnavailableError
from backend_services.infrastructure.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from backend_services.infrastructure.service_discovery import (
    ServiceDiscovery,
    ServiceEndpoint,
    ServiceType,
)
from backend_services.store.memory import MemoryStore

from .browser import Chromium, find_chromium
from .conftest import TOKEN
from .fleet import Fleet

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium found: install the OS package 'chromium' (apt-get install chromium) "
    "or set CHROMIUM to a Chromium executable",
)


@pytest.fixture
async def browser() -> AsyncIterator[Chromium]:
    """A headless Chromium from the OS packages, driven over the DevTools protocol."""
    assert CHROMIUM is not None
    chromium = await Chromium(CHROMIUM).start()
    try:
        yield chromium
    finally:
        await chromium.close()


@pytest.fixture
async def live_fleet() -> AsyncIterator[Fleet]:
    """The small real fleet on the real clock, health-checked every 0.2 s."""
    fleet = await Fleet(None, health_interval=0.2).start()
    try:
        yield fleet
    finally:
        await fleet.close()


@pytest.fixture
async def live_server(live_fleet: Fleet) -> AsyncIterator[ControlServer]:
    """A control server on the real clock, watching the fleet every 0.1 s."""
    server = ControlServer(live_fleet.ops, token=TOKEN, watch_interval=0.1)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close()


def _badge(table: str, attr: str, name: str) -> str:
    return (
        f"(document.querySelector('#{table} tr[data-{attr}=\"{name}\"] .badge') || {{}})"
        ".dataset?.state"
    )


async def test_started_membrane_shows_and_its_circuit_opens_when_killed(
    browser: Chromium,
) -> None:
    """A real membrane process appears healthy on the page; after the test kills it, the
    requests through the resilient client fail, its breaker opens, and the page shows the
    circuit open and the instance unhealthy, live, with no console error."""
    store = MemoryStore()
    await store.initialize()
    membrane = MembraneProcess("membrane-live", kind="memory")
    await membrane.start()
    discovery = ServiceDiscovery(
        health_check_interval=0.3,
        health_check_timeout=1.0,
        max_consecutive_failures=1,
        store=store,
        check_jitter=0.0,
    )
    breaker = CircuitBreaker(
        "membrane-live", CircuitBreakerConfig(failure_threshold=2, timeout=120.0), store=store
    )
    ops = FleetOperations(store=store)
    server = ControlServer(ops, token=TOKEN, watch_interval=0.1)
    client = ServiceClient(
        discovery,
        ServiceType.DTESN_MEMBRANE,
        breaker_factory=lambda endpoint: breaker,
        max_attempts=1,
        timeout=5.0,
    )
    try:
        await discovery.initialize()
        await breaker.initialize()
        await ops.initialize()
        await discovery.register_service(
            ServiceEndpoint("membrane-live", ServiceType.DTESN_MEMBRANE, "127.0.0.1", membrane.port)
        )
        await server.start("127.0.0.1", 0)
        await browser.navigate(server.url + "/")
        await browser.wait_for(
            f"{_badge('services', 'service-id', 'membrane-live')} === 'healthy'",
            what="the membrane shown healthy",
        )
        ok = await client.request("GET", "/membrane_info")
        assert ok.status == 200

        await membrane.kill()
        deadline = time.monotonic() + 20
        while breaker.state.value != "open":
            assert time.monotonic() < deadline, f"breaker still {breaker.state.value}"
            with pytest.raises(ServiceUnavailableError):
                await client.request("GET", "/membrane_info")
            await asyncio.sleep(0.05)

        await browser.wait_for(
            f"{_badge('circuits', 'circuit', 'membrane-live')} === 'open'",
            what="the circuit shown open",
        )
        await browser.wait_for(
            f"{_badge('services', 'service-id', 'membrane-live')} === 'unhealthy'",
            what="the membrane shown unhealthy",
        )
        transitions = await browser.evaluate(
            "[...document.querySelectorAll('#transitions li')].map(li => li.textContent)"
        )
        assert any("circuit membrane-live" in t and "→ open" in t for t in transitions)
        assert browser.errors == []
    finally:
        await server.close()
        await client.close()
        await ops.close()
        await breaker.close()
        await discovery.shutdown()
        await membrane.kill()
        await store.close()


async def test_page_updates_live_without_reloading(
    browser: Chromium, live_server: ControlServer, live_fleet: Fleet
) -> None:
    """The page renders the fleet, then follows changes over SSE in the same document,
    plots them on the timeline chart, and logs no console error."""
    await browser.navigate(live_server.url + "/")
    await browser.wait_for("document.querySelectorAll('#services tbody tr').length === 2")
    await browser.wait_for("document.getElementById('connection').dataset.state === 'live'")
    await browser.evaluate("window.__sameDocument = true")
    await live_fleet.breakers["membrane-1"].force_state("forced_open")
    live_fleet.servers[1].healthy = False
    await browser.wait_for(f"{_badge('circuits', 'circuit', 'membrane-1')} === 'forced_open'")
    await browser.wait_for(f"{_badge('services', 'service-id', 'membrane-2')} === 'unhealthy'")
    assert await browser.evaluate("window.__sameDocument === true")
    points = await browser.evaluate(
        "Chart.getChart('timeline-chart').data.datasets[0].data"
        ".filter(p => p.y === 'circuit:membrane-1').map(p => p.state)"
    )
    assert points[-1] == "forced_open"
    assert await browser.evaluate("Chart.getChart('latency-chart').data.datasets.length") == 2
    assert browser.errors == []


async def test_rollback_needs_the_token_which_stays_in_the_tab(
    browser: Chromium, live_server: ControlServer, live_fleet: Fleet
) -> None:
    """The diff shows what changed; rollback is refused without the token and done with
    it; the token never appears in the URL or in localStorage."""
    await live_fleet.ops.set_config_value("dtesn-service", "membrane_depth", 2, "shallower")
    v2, v3 = (v["id"] for v in (await live_fleet.versions())[-2:])
    await browser.navigate(live_server.url + "/")
    await browser.wait_for("document.querySelectorAll('#config-versions tbody tr').length === 3")
    pick = (
        f"document.getElementById('diff-from').value = '{v2}';"
        "document.getElementById('diff-from').dispatchEvent(new Event('change'));"
    )
    await browser.evaluate(
        pick + f"document.getElementById('diff-to').value = '{v3}';"
        "document.getElementById('diff-button').click()"
    )
    await browser.wait_for(
        "[...document.querySelectorAll('#config-diff tbody td')].map(t => t.textContent)"
        ".join('|') === 'membrane_depth|changed|4|2'",
        what="the diff row",
    )
    await browser.evaluate("document.getElementById('rollback-button').click()")
    await browser.wait_for("document.getElementById('notice').textContent.includes('token')")
    assert (await live_fleet.ops.get_config_value("dtesn-service", "membrane_depth") or {})[
        "value"
    ] == 2

    await browser.evaluate(
        f"document.getElementById('token').value = '{TOKEN}';"
        "document.getElementById('token-form').requestSubmit()"
    )
    await browser.wait_for("document.getElementById('connection').dataset.state === 'live'")
    await browser.evaluate(pick + "document.getElementById('rollback-button').click()")
    await browser.wait_for(
        "document.getElementById('notice').textContent.includes('rolled back to #2')"
    )
    value = await live_fleet.ops.get_config_value("dtesn-service", "membrane_depth")
    assert value is not None
    assert value["value"] == 4
    await browser.wait_for("document.getElementById('config-version').textContent === '#4'")
    assert TOKEN not in await browser.evaluate("location.href + document.cookie")
    assert await browser.evaluate("localStorage.length") == 0
    assert await browser.evaluate("document.getElementById('token').value") == ""
    assert await browser.evaluate("sessionStorage.getItem('backend_services.token')") == TOKEN
    assert browser.errors == []
