"""One monitoring round: built-in and user resource monitors, never blocking the loop.

Built-in monitors (used for a resource the user registers no monitor for): CPU and memory
from :mod:`backend_services.resources` (cgroup first, psutil outside a container; cheap
pseudo-file reads done inline), event-loop lag from a :class:`LoopLagProbe`, and disk
usage of a configured path (``statvfs`` may stall on a network filesystem, so it runs in a
worker thread).

User monitors may be sync or async and return usage 0..1. Async ones run as tasks; sync
ones run in a worker thread (``in_thread=False`` to call a cheap one inline). A round waits
at most ``timeout`` seconds of the clock: a monitor still running then is reported and
skipped, and is not started again until it has finished. A monitor that raises or returns
something outside 0..1 is reported (logged, counted) and ignored for that round.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from numbers import Real
from typing import Any

from ..clock import Clock
from ..degradation.levels import ResourceType
from ..log import get_logger
from ..resources import CpuSampler, LoopLagProbe, MemorySampler, disk_usage

__all__ = ["Monitor", "MonitorFunction", "Sampler", "validate_usage"]

_log = get_logger("service_degradation")

MonitorFunction = Callable[[], Any]
"""A resource monitor: ``() -> float`` or ``async () -> float`` (usage 0..1)."""


def validate_usage(value: Any) -> float | None:
    """``value`` as a usage fraction, or None when it is not a finite number in 0..1."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    v = float(value)
    if not math.isfinite(v) or v < 0.0 or v > 1.0:
        return None
    return v


@dataclass(slots=True)
class Monitor:
    """A registered user monitor and its bookkeeping."""

    resource: ResourceType
    fn: MonitorFunction
    is_async: bool
    in_thread: bool
    busy: bool = False
    failures: int = 0
    last_error: str | None = None


def _is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


class Sampler:
    """Collects one round of usage samples."""

    def __init__(
        self,
        *,
        clock: Clock,
        service_name: str,
        builtin: bool = True,
        cgroup_root: str | os.PathLike[str] | None = None,
        proc_cgroup: str | os.PathLike[str] | None = None,
        disk_path: str | os.PathLike[str] | None = None,
        lag_probe: LoopLagProbe | None = None,
        lag_limit: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        self._clock = clock
        self._service = service_name
        self.builtin = builtin
        kwargs: dict[str, Any] = {}
        if cgroup_root is not None:
            kwargs["cgroup_root"] = cgroup_root
        if proc_cgroup is not None:
            kwargs["proc_cgroup"] = proc_cgroup
        self.cpu = CpuSampler(**kwargs) if builtin else None
        self.memory = MemorySampler(**kwargs) if builtin else None
        self.disk_path = disk_path
        self.lag_probe = lag_probe if builtin else None
        self.lag_limit = lag_limit
        self.timeout = timeout
        self.monitors: dict[ResourceType, Monitor] = {}
        self.pushed: dict[ResourceType, float] = {}
        self.errors: dict[str, int] = {}
        self.last_errors: dict[str, str] = {}
        self._disk_busy = False

    # -- registration ------------------------------------------------------------------
    def register(
        self, resource: ResourceType, fn: MonitorFunction, in_thread: bool | None
    ) -> Monitor:
        is_async = _is_async_callable(fn)
        monitor = Monitor(
            resource, fn, is_async, (not is_async) if in_thread is None else in_thread
        )
        self.monitors[resource] = monitor
        return monitor

    def builtin_types(self) -> list[ResourceType]:
        out: list[ResourceType] = []
        if self.cpu is not None:
            out.append(ResourceType.CPU)
        if self.memory is not None:
            out.append(ResourceType.MEMORY)
        if self.lag_probe is not None:
            out.append(ResourceType.EVENT_LOOP)
        if self.builtin and self.disk_path is not None:
            out.append(ResourceType.DISK)
        return [r for r in out if r not in self.monitors]

    def prime(self, now: float) -> None:
        """Take the CPU baseline so the first round already has a CPU value."""
        if self.cpu is not None:
            try:
                self.cpu.sample(now)
            except Exception as exc:
                self._report(ResourceType.CPU, f"built-in monitor failed: {exc!r}")

    # -- reporting ---------------------------------------------------------------------
    def _report(self, resource: ResourceType, problem: str) -> None:
        self.errors[resource.value] = self.errors.get(resource.value, 0) + 1
        self.last_errors[resource.value] = problem
        monitor = self.monitors.get(resource)
        if monitor is not None:
            monitor.failures += 1
            monitor.last_error = problem
        _log.warning(
            "monitor_failed", service=self._service, resource=resource.value, problem=problem
        )

    def _accept(self, out: dict[ResourceType, float], resource: ResourceType, raw: Any) -> None:
        value = validate_usage(raw)
        if value is None:
            self._report(resource, f"returned {raw!r}; expected a usage between 0 and 1")
        else:
            out[resource] = value

    # -- one round ---------------------------------------------------------------------
    async def collect(self, now: float) -> dict[ResourceType, float]:
        """Usage samples of this round (failed or invalid monitors left out)."""
        out: dict[ResourceType, float] = {}
        if self.pushed:
            out.update(self.pushed)
            self.pushed.clear()
        user = self.monitors
        if self.cpu is not None and ResourceType.CPU not in user:
            self._builtin(out, ResourceType.CPU, partial(self.cpu.sample, now))
        if self.memory is not None and ResourceType.MEMORY not in user:
            self._builtin(out, ResourceType.MEMORY, self.memory.sample)
        if self.lag_probe is not None and ResourceType.EVENT_LOOP not in user:
            lag = self.lag_probe.take()
            out[ResourceType.EVENT_LOOP] = min(1.0, lag / self.lag_limit)
        jobs: dict[ResourceType, asyncio.Future[Any]] = {}
        if (
            self.builtin
            and self.disk_path is not None
            and ResourceType.DISK not in user
            and not self._disk_busy
        ):
            jobs[ResourceType.DISK] = self._disk_job()
        for resource, monitor in user.items():
            if monitor.busy:
                self._report(resource, "still running from an earlier round; skipped")
                continue
            if not monitor.is_async and not monitor.in_thread:
                try:
                    raw = monitor.fn()
                except Exception as exc:
                    self._report(resource, f"raised {exc!r}")
                    continue
                if inspect.isawaitable(raw):
                    jobs[resource] = asyncio.ensure_future(raw)
                else:
                    self._accept(out, resource, raw)
                continue
            jobs[resource] = self._start(monitor)
        if jobs:
            await self._gather(jobs, out)
        return out

    def _builtin(
        self, out: dict[ResourceType, float], resource: ResourceType, fn: Callable[[], Any]
    ) -> None:
        try:
            raw = fn()
        except Exception as exc:
            self._report(resource, f"built-in monitor failed: {exc!r}")
            return
        if raw is not None:
            self._accept(out, resource, raw)

    def _disk_job(self) -> asyncio.Future[Any]:
        path = self.disk_path
        assert path is not None
        self._disk_busy = True
        fut = asyncio.ensure_future(asyncio.to_thread(disk_usage, path))

        def done(_: asyncio.Future[Any]) -> None:
            self._disk_busy = False

        fut.add_done_callback(done)
        return fut

    def _start(self, monitor: Monitor) -> asyncio.Future[Any]:
        if monitor.is_async:
            fut = asyncio.ensure_future(_await_result(monitor.fn))
        else:
            fut = asyncio.ensure_future(_thread_result(monitor.fn))
        monitor.busy = True

        def done(_: asyncio.Future[Any]) -> None:
            monitor.busy = False

        fut.add_done_callback(done)
        return fut

    async def _gather(
        self, jobs: dict[ResourceType, asyncio.Future[Any]], out: dict[ResourceType, float]
    ) -> None:
        pending: set[asyncio.Future[Any]] = set(jobs.values())
        timer = asyncio.ensure_future(self._clock.sleep(self.timeout))
        try:
            while pending and not timer.done():
                _, pending = await asyncio.wait(
                    pending | {timer}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(timer)
        finally:
            timer.cancel()
        for resource, fut in jobs.items():
            if not fut.done():
                self._report(resource, f"no answer within {self.timeout:g}s; skipped this round")
                monitor = self.monitors.get(resource)
                if monitor is not None and monitor.is_async:
                    fut.cancel()
                else:
                    fut.add_done_callback(_swallow)
                continue
            exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
            if exc is not None:
                self._report(resource, f"raised {exc!r}")
                continue
            self._accept(out, resource, fut.result())


def _swallow(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _await_result(fn: MonitorFunction) -> Any:
    result = fn()
    while inspect.isawaitable(result):
        result = await result
    return result


async def _thread_result(fn: MonitorFunction) -> Any:
    result = await asyncio.to_thread(fn)
    while inspect.isawaitable(result):
        result = await result
    return result
