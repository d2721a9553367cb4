"""What the demo coordinator sees as it happens: breaker transitions, discovery events
(up, down, registered, ejected, readmitted), the membranes' degradation levels (polled),
the live status line, and configuration pushed to membranes on the in-memory default.

Part of :class:`~backend_services.demo.scenario.Scenario`; the state it works on is
:class:`~backend_services.demo.state.ScenarioState`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .constants import LEVEL_ORDER, LEVELS
from .state import ScenarioState

__all__ = ["Watching"]


class Watching(ScenarioState):
    """Callbacks of the coordinator's components and the watch loop."""

    # --- callbacks and watching ---------------------------------------------------------

    def _on_breaker_event(self, event: Any) -> None:
        if self._closing:
            return
        mid = event.name.removeprefix("membrane:")
        state = str(event.state.value)
        self.breaker_state[mid] = state
        trigger = getattr(event.trigger, "value", event.trigger)
        style = {"open": "red", "half_open": "yellow", "closed": "green"}.get(state, "")
        why = f" ({str(trigger).replace('_', ' ')})" if trigger else ""
        self.note("breaker", mid, f"breaker {state}{why}", style)

    def _on_up(self, service_id: str) -> None:
        if self._closing:
            return
        self.note("discovery", service_id, "healthy (health checks pass)", "green")
        if not self.redis_url and self.config is not None:
            task = asyncio.get_running_loop().create_task(self._push_current_config([service_id]))
            self._pushes.add(task)
            task.add_done_callback(self._pushes.discard)

    def _on_discovery_event(self, event: Any) -> None:
        if self._closing or event.service_id not in self.ids:
            return
        if event.kind == "registered":
            who = "registered itself" if self.redis_url else "registered by the coordinator"
            self.note("registry", event.service_id, f"{who} (starting)")
        elif event.kind == "deregistered":
            self.note("registry", event.service_id, "deregistered")
        elif event.kind == "ejected":
            self.note("discovery", event.service_id, "ejected after failed calls (passive)")
        elif event.kind == "readmitted":
            self.note("discovery", event.service_id, "readmitted (healthy again)")

    def _on_down(self, service_id: str) -> None:
        if self._closing:
            return
        self.note("discovery", service_id, "marked down (health checks fail)", "red")

    async def _push_current_config(self, mids: list[str]) -> None:
        assert self.config is not None
        values = {
            "membrane_depth": await self.config.get_config("membrane_depth", LEVELS),
            "processing_timeout": await self.config.get_config("processing_timeout", 5.0),
        }
        await self.fleet.push_config(values, mids)

    async def _push_config(self, key: str, new: Any, old: Any) -> None:
        if key in ("membrane_depth", "processing_timeout") and new is not None:
            await self.fleet.push_config({key: new})

    async def _watch_loop(self) -> None:
        tick = 0
        while True:
            if tick % 4 == 0:
                await asyncio.gather(*(self._poll_level(mid) for mid in self.fleet.running()))
            self.view.status(self.t(), self._status_line())
            tick += 1
            await asyncio.sleep(0.05)

    async def _poll_level(self, mid: str) -> None:
        view = await self.fleet.poll(mid)
        if not view.reachable or view.level in ("?", self.levels.get(mid)):
            return
        old, self.levels[mid] = self.levels.get(mid, "normal"), view.level
        self.marks.levels_seen.setdefault(mid, [old]).append(view.level)
        worse = LEVEL_ORDER.index(view.level) > LEVEL_ORDER.index(old)
        off = sorted(k for k, v in view.features.items() if not v)
        detail = f"degradation {old} -> {view.level}"
        if off:
            detail += f" (off: {', '.join(off)})"
        self.note("degradation", mid, detail, "yellow" if worse else "green")

    def _status_line(self) -> str:
        counts = self.rec.outcomes()
        parts = [
            f"req {sum(counts.values())}",
            f"ok {counts.get('ok', 0)}",
            f"fallback {counts.get('fallback', 0)}",
            f"failed {counts.get('failed', 0)}",
        ]
        mems = []
        known = self.discovery.service_health if self.discovery is not None else {}
        for mid in self.ids:
            short = mid.rsplit("-", 1)[-1]
            record = known.get(mid)
            health = str(record.status.value) if record is not None else "?"
            mems.append(
                f"#{short} {self.view.paint(health[:4], 'green' if health == 'healthy' else 'red')}"
                f"/{self.breaker_state.get(mid, '?')}/{self.levels.get(mid, '?')}"
            )
        return " ".join(parts) + " | " + "  ".join(mems)
