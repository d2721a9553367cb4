"""The demo's phases, in order (each takes the running :class:`~.scenario.Scenario`).

Each phase does one thing to the fleet, waits (bounded, in real time) for the library to
react, and records checks: what the demo set out to show and whether it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..infrastructure.config_manager import ConfigSource
from ..infrastructure.service_discovery import ServiceType
from .constants import LEVEL_ORDER, LEVELS

if TYPE_CHECKING:
    from .scenario import Scenario

__all__ = ["PHASES", "stepwise"]


async def phase_start(sc: Scenario) -> None:
    sc.view.phase(1, "Start membranes, register them, discover them as health checks pass")
    assert sc.discovery is not None
    await sc.fleet.start_all()
    for mid, proc in sc.fleet.procs.items():
        sc.say(f"{mid}: process {proc.pid} serving on port {proc.port}")
    if not sc.redis_url:
        for mid, proc in sc.fleet.procs.items():
            await sc.discovery.register_service(sc.endpoint(mid, proc.port))
    found = await sc.until(lambda: sc.healthy() >= set(sc.ids), within=15.0)
    discovered = await sc.discovery.discover_services(ServiceType.DTESN_MEMBRANE)
    sc.rec.check(
        "all membranes discovered after real health checks",
        found is not None and {e.service_id for e in discovered} >= set(sc.ids),
        f"{len(discovered)} of {len(sc.ids)} discovered",
    )


async def phase_traffic(sc: Scenario) -> None:
    sc.view.phase(2, f"Steady traffic through the request path ({sc.rate:g} requests/s)")
    assert sc.traffic is not None
    start = sc.t()
    sc.traffic.start()
    await asyncio.sleep(2.5)  # let real traffic flow
    counts = sc.rec.outcomes(since=start)
    spread = sc.rec.served_by(since=start)
    sc.say(
        f"{sum(counts.values())} requests, {counts.get('ok', 0)} answered; "
        + ", ".join(f"{k} {v}" for k, v in sorted(spread.items()))
    )
    sc.rec.check(
        "steady traffic is spread over every membrane",
        set(spread) >= set(sc.ids) and counts.get("failed", 0) == 0,
        f"served by {len(spread)} membranes",
    )


async def phase_kill(sc: Scenario) -> None:
    victim = sc.marks.killed = sc.ids[1]
    sc.view.phase(3, f"Kill {victim}: breaker, discovery, traffic shift, fallback")
    sc.marks.t_kill = sc.t()
    await sc.fleet.procs[victim].kill()
    sc.say(f"{victim}: killed (SIGKILL)", "red")
    sc.marks.t_breaker_open = await sc.until(
        lambda: sc.breaker_state.get(victim) == "open", within=10.0
    )
    sc.marks.t_discovery_down = await sc.until(lambda: victim not in sc.healthy(), within=10.0)
    await asyncio.sleep(2.0)  # traffic keeps flowing on the survivors
    since = (sc.marks.t_discovery_down or sc.t()) + 0.5
    after = sc.rec.served_by(since=since)
    sc.say(
        "traffic now: " + ", ".join(f"{k} {v}" for k, v in sorted(after.items()) if v),
    )
    failed = len(sc.rec.failures())
    sc.rec.check(f"{victim}'s breaker opened", sc.marks.t_breaker_open is not None, "state open")
    sc.rec.check(
        f"discovery marked {victim} down",
        sc.marks.t_discovery_down is not None,
        "not healthy",
    )
    sc.rec.check(
        "traffic shifted to the survivors",
        victim not in after and sum(after.values()) > 0,
        f"{sum(after.values())} requests served by others",
    )
    sc.say(f"failed requests seen by the caller so far: {failed}", "green" if not failed else "red")


async def phase_slow(sc: Scenario) -> None:
    slow = sc.marks.slowed = sc.ids[2]
    sc.view.phase(4, f"Slow {slow} down, then raise resource pressure")
    sc.marks.t_slow = sc.t()
    await sc.fleet.set_faults(slow, slow=0.4)
    sc.say(f"{slow}: every call now takes 400 ms more (slow-call threshold 250 ms)")
    sc.marks.t_slow_open = await sc.until(lambda: sc.breaker_state.get(slow) == "open", within=10.0)
    await sc.fleet.set_faults(slow, clear=True)
    sc.say(f"{slow}: back to normal speed")
    sc.marks.t_slow_closed = await sc.until(
        lambda: sc.breaker_state.get(slow) == "closed", within=10.0
    )
    sc.rec.check(
        f"slow-call detection opened {slow}'s breaker",
        sc.marks.t_slow_open is not None,
        "open on slow calls",
    )
    sc.rec.check(
        f"{slow}'s breaker closed again once it was fast",
        sc.marks.t_slow_closed is not None,
        "half-open trials succeeded",
    )


async def phase_pressure(sc: Scenario) -> None:
    targets = [m for m in sc.ids if m != sc.marks.killed]
    names = ", ".join(targets)
    sc.say(f"resource pressure 93% on {names}", "yellow")
    sc.marks.t_pressure = sc.t()
    for mid in targets:
        await sc.fleet.set_faults(mid, pressure=0.93)
    sc.marks.t_pressure_peak = await sc.until(
        lambda: all(sc.levels.get(m) == "emergency" for m in targets), within=8.0
    )
    await asyncio.sleep(1.0)  # requests are served degraded meanwhile
    degraded = sum(
        1
        for c in sc.rec.calls
        if c.outcome == "ok" and c.degraded and c.t >= (sc.marks.t_pressure or 0)
    )
    sc.say(f"{degraded} responses computed at reduced depth (advanced_analytics off)")

    sc.say(f"resource pressure 97% on {names}: offline, no membrane serves", "red")
    t_offline = sc.t()
    for mid in targets:
        await sc.fleet.set_faults(mid, pressure=0.97)
    reached = await sc.until(
        lambda: all(sc.levels.get(m) == "offline" for m in targets), within=8.0
    )
    await asyncio.sleep(1.0)  # the local fallback answers meanwhile
    covered = sc.rec.outcomes(since=t_offline).get("fallback", 0)
    sc.say(f"{covered} requests answered by the local fallback (depth 1)")

    sc.marks.t_release = sc.t()
    for mid in targets:
        await sc.fleet.set_faults(mid, pressure=0.0)
    sc.say("pressure released; recovery goes one level per recovery delay", "green")
    sc.marks.t_recovered = await sc.until(
        lambda: all(sc.levels.get(m) == "normal" for m in targets), within=15.0
    )
    back = await sc.until(lambda: set(targets) <= sc.serving(), within=10.0)
    steps_ok = all(stepwise(sc.marks.levels_seen.get(m, [])) for m in targets)
    sc.rec.check(
        "pressure raised the degradation level and switched features off",
        sc.marks.t_pressure_peak is not None and degraded > 0,
        f"{degraded} responses at reduced depth",
    )
    sc.rec.check(
        "with every membrane offline the fallback answered",
        reached is not None and covered > 0,
        f"{covered} fallback answers",
    )
    sc.rec.check(
        "levels recovered step by step to normal and the membranes serve again",
        sc.marks.t_recovered is not None and steps_ok and back is not None,
        " / ".join(" -> ".join(sc.marks.levels_seen.get(m, [])) for m in targets),
    )


async def _depths(sc: Scenario) -> dict[str, int]:
    out = {}
    for mid in sc.fleet.running():
        with contextlib.suppress(Exception):
            out[mid] = int((await sc.fleet.config_of(mid))["membrane_depth"])
    return out


async def _wait_depth(sc: Scenario, depth: int) -> float | None:
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        depths = await _depths(sc)
        if depths and all(d == depth for d in depths.values()):
            return sc.t()
        await asyncio.sleep(0.05)
    return None


async def phase_config(sc: Scenario) -> None:
    sc.view.phase(5, "Change configuration live, snapshot, roll back")
    assert sc.config is not None
    baseline = await sc.config.create_version_snapshot("demo: before the change")
    sc.say(f"snapshot {baseline} taken (membrane_depth={LEVELS})")
    sc.marks.t_config = sc.t()
    await sc.config.set_config(
        "membrane_depth", 2, ConfigSource.API, description="demo: shallower membranes"
    )
    sc.say("membrane_depth set to 2")
    sc.marks.t_config_seen = await _wait_depth(sc, 2)
    if sc.marks.t_config_seen is not None:
        sc.say("every running membrane now computes 2 levels", "green")
    await asyncio.sleep(0.5)
    sc.marks.t_rollback = sc.t()
    restored = await sc.config.rollback_to_version(baseline)
    sc.say(f"rolled back to {baseline}")
    sc.marks.t_rollback_seen = await _wait_depth(sc, LEVELS)
    sc.marks.config_versions = len(await sc.config.list_versions())
    sc.rec.check(
        "a live configuration change reached every running membrane",
        sc.marks.t_config_seen is not None,
        "membrane_depth=2 seen",
    )
    sc.rec.check(
        "rollback restored the snapshot everywhere",
        bool(restored) and sc.marks.t_rollback_seen is not None,
        f"membrane_depth={LEVELS} seen",
    )


async def phase_restart(sc: Scenario) -> None:
    victim = sc.marks.killed
    sc.view.phase(6, f"Restart {victim}: it rejoins and its breaker closes")
    assert sc.discovery is not None
    sc.marks.t_restart = sc.t()
    proc = sc.fleet.procs[victim]
    await proc.start()
    sc.say(f"{victim}: process {proc.pid} serving on port {proc.port}")
    if not sc.redis_url and await sc.discovery.get_service(victim) is None:
        await sc.discovery.register_service(sc.endpoint(victim, proc.port))
    sc.marks.t_rejoined = await sc.until(lambda: victim in sc.healthy(), within=10.0)
    sc.marks.t_closed_again = await sc.until(
        lambda: sc.breaker_state.get(victim) == "closed", within=10.0
    )
    await asyncio.sleep(1.5)  # traffic flows to it again
    back = sc.rec.served_by(since=sc.marks.t_closed_again or sc.t())
    sc.rec.check(
        f"{victim} rejoined after passing health checks",
        sc.marks.t_rejoined is not None,
        "healthy again",
    )
    sc.rec.check(
        f"{victim}'s breaker closed and it serves again",
        sc.marks.t_closed_again is not None and back.get(victim, 0) > 0,
        f"{back.get(victim, 0)} requests served since",
    )


def stepwise(levels: list[str]) -> bool:
    """After the peak, each change goes exactly one level better, ending at normal."""
    if not levels or levels[-1] != "normal":
        return False
    ranks = [LEVEL_ORDER.index(x) for x in levels]
    peak = ranks.index(max(ranks))
    tail = ranks[peak:]
    return all(b == a - 1 for a, b in itertools.pairwise(tail))


PHASES: tuple[Callable[[Scenario], Awaitable[None]], ...] = (
    phase_start,
    phase_traffic,
    phase_kill,
    phase_slow,
    phase_pressure,
    phase_config,
    phase_restart,
)
