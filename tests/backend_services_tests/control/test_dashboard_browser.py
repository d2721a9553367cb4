"""The dashboard in a real headless Chromium: live updates, the diff and the rollback
action behind the token, and the token kept out of URLs and lasting storage."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backend_services.control.server import ControlServer

from .browser import Chromium, find_chromium
from .conftest import TOKEN
from .fleet import SimpleFleet

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium found (install the OS package 'chromium', or set CHROMIUM=path)",
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
async def live_server(fleet: SimpleFleet) -> AsyncIterator[ControlServer]:
    """A control server on the real clock, watching the fleet every 0.1 s."""
    server = ControlServer(fleet, token=TOKEN, watch_interval=0.1)
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


async def test_page_updates_live_without_reloading(
    browser: Chromium, live_server: ControlServer, fleet: SimpleFleet
) -> None:
    """The page renders the fleet, then follows changes over SSE in the same document,
    plots them on the timeline chart, and logs no console error."""
    await browser.navigate(live_server.url + "/")
    await browser.wait_for("document.querySelectorAll('#services tbody tr').length === 2")
    await browser.wait_for("document.getElementById('connection').dataset.state === 'live'")
    await browser.evaluate("window.__sameDocument = true")
    fleet.circuits["membrane-1"]["state"] = "open"
    fleet.services["membrane-1"]["status"] = "unhealthy"
    await browser.wait_for(f"{_badge('circuits', 'circuit', 'membrane-1')} === 'open'")
    await browser.wait_for(f"{_badge('services', 'service-id', 'membrane-1')} === 'unhealthy'")
    assert await browser.evaluate("window.__sameDocument === true")
    points = await browser.evaluate(
        "Chart.getChart('timeline-chart').data.datasets[0].data"
        ".filter(p => p.y === 'circuit:membrane-1').map(p => p.state)"
    )
    assert points[-1] == "open"
    assert await browser.evaluate("Chart.getChart('latency-chart').data.datasets.length") == 2
    assert browser.errors == []


async def test_rollback_needs_the_token_which_stays_in_the_tab(
    browser: Chromium, live_server: ControlServer, fleet: SimpleFleet
) -> None:
    """The diff shows what changed; rollback is refused without the token and done with
    it; the token never appears in the URL or in localStorage."""
    await fleet.set_config_value("dtesn-service", "membrane_depth", 2, "shallower")
    await browser.navigate(live_server.url + "/")
    await browser.wait_for("document.querySelectorAll('#config-versions tbody tr').length === 2")
    await browser.evaluate(
        "document.getElementById('diff-from').value = 'v1';"
        "document.getElementById('diff-from').dispatchEvent(new Event('change'));"
        "document.getElementById('diff-to').value = 'v2';"
        "document.getElementById('diff-button').click()"
    )
    await browser.wait_for(
        "[...document.querySelectorAll('#config-diff tbody td')].map(t => t.textContent)"
        ".join('|') === 'membrane_depth|changed|4|2'",
        what="the diff row",
    )
    await browser.evaluate("document.getElementById('rollback-button').click()")
    await browser.wait_for("document.getElementById('notice').textContent.includes('token')")
    assert fleet.config["membrane_depth"] == 2

    await browser.evaluate(
        f"document.getElementById('token').value = '{TOKEN}';"
        "document.getElementById('token-form').requestSubmit()"
    )
    await browser.wait_for("document.getElementById('connection').dataset.state === 'live'")
    await browser.evaluate(
        "document.getElementById('diff-from').value = 'v1';"
        "document.getElementById('diff-from').dispatchEvent(new Event('change'));"
        "document.getElementById('rollback-button').click()"
    )
    await browser.wait_for(
        "document.getElementById('notice').textContent.includes('rolled back to v1')"
    )
    assert fleet.config["membrane_depth"] == 4
    await browser.wait_for("document.getElementById('config-version').textContent === 'v3'")
    assert TOKEN not in await browser.evaluate("location.href + document.cookie")
    assert await browser.evaluate("localStorage.length") == 0
    assert await browser.evaluate("document.getElementById('token').value") == ""
    assert await browser.evaluate("sessionStorage.getItem('backend_services.token')") == TOKEN
    assert browser.errors == []
