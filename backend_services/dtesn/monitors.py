"""The membrane's resource monitors for its degradation manager.

Three modes:

* ``system`` (default) — the degradation manager's built-in monitors (container-correct
  CPU and memory, event-loop lag); the CPU reading is raised to any synthetic pressure
  switched on through the fault switches.
* ``process`` — only this process's own use: its CPU share of the machine and its
  resident memory share, each raised to the synthetic pressure. Used by the demo, so
  that other programs on the machine do not move the membranes' levels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

import psutil

from ..clock import Clock, resolve_clock
from ..resources import CpuSampler

__all__ = ["MONITOR_MODES", "MonitorMode", "ResourceReadings"]

MonitorMode = Literal["system", "process", "pressure"]
MONITOR_MODES: Final = ("system", "process", "pressure")
_MIN_INTERVAL: Final = 0.1  # seconds between CPU readings (shorter ones are too noisy)


class ResourceReadings:
    """Usage readings 0..1 for CPU and memory, raised to ``pressure()``."""

    def __init__(
        self,
        mode: MonitorMode,
        pressure: Callable[[], float],
        *,
        clock: Clock | None = None,
    ) -> None:
        if mode not in MONITOR_MODES:
            raise ValueError(f"mode={mode!r}: expected one of {', '.join(MONITOR_MODES)}")
        self.mode = mode
        self._pressure = pressure
        self._clock = resolve_clock(clock)
        self._proc = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._total_memory = psutil.virtual_memory().total or 1
        self._cpu = CpuSampler() if mode == "system" else None
        self._last_cpu = 0.0
        self._base: tuple[float, float] | None = None

    def prime(self) -> None:
        """Take the baseline now (start-up work before this does not count)."""
        if self._cpu is not None:
            self._cpu.sample(self._clock.monotonic())
        else:
            self._base = (self._clock.monotonic(), self._cpu_seconds())

    def _cpu_seconds(self) -> float:
        times = self._proc.cpu_times()
        return float(times.user + times.system)

    def cpu(self) -> float:
        """CPU usage 0..1 (system: the container/machine; process: this process)."""
        if self.mode == "pressure":
            return self._pressure()
        if self._cpu is not None:
            sample = self._cpu.sample(self._clock.monotonic())
            if sample is not None:
                self._last_cpu = sample
        else:
            now, used = self._clock.monotonic(), self._cpu_seconds()
            if self._base is not None and now - self._base[0] >= _MIN_INTERVAL:
                share = (used - self._base[1]) / (now - self._base[0]) / self._cores
                self._last_cpu = min(1.0, max(0.0, share))
                self._base = (now, used)
            elif self._base is None:
                self._base = (now, used)
        return max(self._last_cpu, self._pressure())

    def memory(self) -> float:
        """This process's resident memory as a share of the machine (process mode)."""
        if self.mode == "pressure":
            return self._pressure()
        rss = self._proc.memory_info().rss
        return max(min(1.0, rss / self._total_memory), self._pressure())
