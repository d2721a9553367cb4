"""Resource signals that are correct inside a container.

* Memory — cgroup v2: working set = ``memory.current`` minus ``inactive_file`` (from
  ``memory.stat``) against the tighter of ``memory.max`` / ``memory.high``; cgroup v1:
  ``memory.usage_in_bytes`` minus ``total_inactive_file`` against ``memory.limit_in_bytes``;
  without a limit (outside a container): ``psutil`` (used / total system memory).
* CPU — cgroup v2: ``usage_usec`` growth from ``cpu.stat`` against the ``cpu.max`` quota,
  and the share of periods that were throttled (``nr_throttled / nr_periods``); the
  signal is the larger of the two. cgroup v1 reads ``cpuacct.usage`` and
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``. Without a quota: ``psutil`` system CPU.
* Disk — used share of the filesystem holding a path (like ``df``).
* Event-loop lag — how late a timer fires (:class:`LoopLagProbe`): the earliest sign an
  asyncio service is overloaded.

All readers are cheap (a few small reads from kernel pseudo-files); the cgroup root and
``/proc/self/cgroup`` paths are parameters so tests can point them at files they wrote.
Time (for CPU deltas) is passed in.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clock import Clock, resolve_clock

__all__ = [
    "CGROUP_ROOT",
    "MIN_CPU_INTERVAL",
    "CpuReading",
    "CpuSampler",
    "LoopLagProbe",
    "MemoryReading",
    "MemorySampler",
    "disk_usage",
    "find_cgroup",
    "parse_cpu_max",
    "parse_keyed",
    "parse_limit",
]

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"
_V1_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge page-rounded number
MIN_CPU_INTERVAL = 0.05
"""CPU readings closer together than this (seconds) are skipped, keeping the baseline."""


def _read(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace")
    except OSError:
        return None


def parse_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (``memory.stat``, ``cpu.stat``) as a dict; junk lines skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_limit(text: str) -> int | None:
    """A byte limit: ``max`` (or a v1 'unlimited' number, or junk) -> None."""
    value = text.strip()
    if value in ("", "max"):
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return None if n <= 0 or n >= _V1_UNLIMITED else n


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` (``"quota period"``) as cores; ``max`` -> None."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


@dataclass(frozen=True, slots=True)
class CgroupPaths:
    """Where this process's cgroup files are: v2 (one directory) or v1 (per controller)."""

    version: int
    memory: Path | None
    cpu: Path | None
    cpuacct: Path | None


def find_cgroup(
    root: str | os.PathLike[str] = CGROUP_ROOT,
    proc_cgroup: str | os.PathLike[str] = PROC_SELF_CGROUP,
) -> CgroupPaths | None:
    """Locate this process's cgroup under ``root`` from ``proc_cgroup`` (None: none)."""
    base = Path(root)
    text = _read(Path(proc_cgroup)) or ""
    v1: dict[str, str] = {}
    v2_rel: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_rel = parts[2]
        for controller in parts[1].split(","):
            if controller:
                v1[controller] = parts[2]

    def pick(candidates: list[Path], probe: str) -> Path | None:
        for c in candidates:
            if (c / probe).exists():
                return c
        return None

    if (base / "cgroup.controllers").exists():
        rel = (v2_rel or "/").lstrip("/")
        found = pick([base / rel, base], "cgroup.controllers") if rel else base
        if found is not None:
            return CgroupPaths(2, found, found, found)
    if v1:

        def v1_dir(controller: str, probe: str) -> Path | None:
            rel = v1.get(controller, "/").lstrip("/")
            mounts = [base / controller, base / "cpu,cpuacct", base / "cpuacct,cpu"]
            cands = [m / rel for m in mounts if rel] + mounts
            return pick(cands, probe)

        memory = v1_dir("memory", "memory.usage_in_bytes")
        cpu = v1_dir("cpu", "cpu.cfs_quota_us")
        cpuacct = v1_dir("cpuacct", "cpuacct.usage")
        if memory or cpu:
            return CgroupPaths(1, memory, cpu, cpuacct)
    return None


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """Working set against the limit; ``source`` is ``cgroup2``, ``cgroup1`` or ``psutil``."""

    used_bytes: int
    limit_bytes: int
    usage: float
    source: str


class MemorySampler:
    """Memory usage 0..1 of the container (cgroup limit) or else of the machine."""

    def __init__(
        self,
        *,
        cgroup_root: str | os.PathLike[str] = CGROUP_ROOT,
        proc_cgroup: str | os.PathLike[str] = PROC_SELF_CGROUP,
        use_psutil: bool = True,
    ) -> None:
        self._paths = find_cgroup(cgroup_root, proc_cgroup)
        self._use_psutil = use_psutil

    def read(self) -> MemoryReading | None:
        """One reading (None: no cgroup limit and no psutil)."""
        p = self._paths
        if p is not None and p.memory is not None:
            reading = self._cgroup(p.version, p.memory)
            if reading is not None:
                return reading
        if not self._use_psutil:
            return None
        import psutil

        vm = psutil.virtual_memory()
        used = max(0, vm.total - vm.available)
        return MemoryReading(used, vm.total, used / vm.total if vm.total else 0.0, "psutil")

    def sample(self) -> float | None:
        reading = self.read()
        return None if reading is None else min(1.0, reading.usage)

    @staticmethod
    def _cgroup(version: int, d: Path) -> MemoryReading | None:
        if version == 2:
            limits = [parse_limit(_read(d / f) or "") for f in ("memory.max", "memory.high")]
            current, stat_name, inactive_key = "memory.current", "memory.stat", "inactive_file"
        else:
            limits = [parse_limit(_read(d / "memory.limit_in_bytes") or "")]
            current, stat_name, inactive_key = (
                "memory.usage_in_bytes",
                "memory.stat",
                "total_inactive_file",
            )
        known = [x for x in limits if x is not None]
        if not known:
            return None
        limit = min(known)
        raw = _read(d / current)
        if raw is None:
            return None
        try:
            used = int(raw.strip())
        except ValueError:
            return None
        stat = parse_keyed(_read(d / stat_name) or "")
        inactive = stat.get(inactive_key, stat.get("inactive_file", 0))
        working = max(0, used - inactive)
        return MemoryReading(working, limit, working / limit, f"cgroup{version}")


@dataclass(frozen=True, slots=True)
class CpuReading:
    """CPU over the last interval: ``usage`` (0..1, the signal), cores used, the core
    limit, the throttled share of periods, and the ``source``."""

    usage: float
    cores_used: float
    limit_cores: float
    throttled: float
    source: str


class CpuSampler:
    """CPU usage 0..1 against the container's quota (or else the machine), by deltas.

    The first call only takes a baseline and returns None; so does a call less than
    :data:`MIN_CPU_INTERVAL` after the baseline (which is then kept).
    """

    def __init__(
        self,
        *,
        cgroup_root: str | os.PathLike[str] = CGROUP_ROOT,
        proc_cgroup: str | os.PathLike[str] = PROC_SELF_CGROUP,
        use_psutil: bool = True,
    ) -> None:
        self._paths = find_cgroup(cgroup_root, proc_cgroup)
        self._use_psutil = use_psutil
        self._prev: tuple[str, float, float, int, int] | None = None
        self._prev_times: Any = None
        self._prev_times_at = 0.0

    def _quota(self) -> float | None:
        p = self._paths
        if p is None or p.cpu is None:
            return None
        if p.version == 2:
            return parse_cpu_max(_read(p.cpu / "cpu.max") or "")
        try:
            quota = int((_read(p.cpu / "cpu.cfs_quota_us") or "").strip())
            period = int((_read(p.cpu / "cpu.cfs_period_us") or "").strip())
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None

    def _counters(self) -> tuple[float, int, int] | None:
        """(cpu seconds used, periods, throttled periods) from the cgroup."""
        p = self._paths
        if p is None or p.cpu is None:
            return None
        stat = parse_keyed(_read(p.cpu / "cpu.stat") or "")
        periods, throttled = stat.get("nr_periods", 0), stat.get("nr_throttled", 0)
        if p.version == 2:
            if "usage_usec" not in stat:
                return None
            return stat["usage_usec"] / 1e6, periods, throttled
        if p.cpuacct is None:
            return None
        try:
            ns = int((_read(p.cpuacct / "cpuacct.usage") or "").strip())
        except ValueError:
            return None
        return ns / 1e9, periods, throttled

    def read(self, now: float) -> CpuReading | None:
        """One reading at monotonic ``now`` (None on the first call or without a source)."""
        limit = self._quota()
        if limit is not None:
            counters = self._counters()
            if counters is not None:
                used, periods, throttled = counters
                prev = self._prev
                if prev is not None and prev[0] == "cgroup" and now - prev[1] < MIN_CPU_INTERVAL:
                    return None  # too short to measure: keep the older baseline
                self._prev = ("cgroup", now, used, periods, throttled)
                if prev is None or prev[0] != "cgroup":
                    return None
                cores = max(0.0, used - prev[2]) / (now - prev[1])
                d_periods = periods - prev[3]
                share = (throttled - prev[4]) / d_periods if d_periods > 0 else 0.0
                share = min(1.0, max(0.0, share))
                usage = min(1.0, max(cores / limit, share))
                version = self._paths.version if self._paths else 2
                return CpuReading(usage, cores, limit, share, f"cgroup{version}")
        if not self._use_psutil:
            return None
        import psutil

        if self._prev_times is not None and now - self._prev_times_at < MIN_CPU_INTERVAL:
            return None  # too short to measure: keep the older baseline
        times = psutil.cpu_times()
        prev_times, self._prev_times, self._prev_times_at = self._prev_times, times, now
        self._prev = None
        if prev_times is None:
            return None
        total = sum(times) - sum(prev_times)
        idle = (times.idle + getattr(times, "iowait", 0.0)) - (
            prev_times.idle + getattr(prev_times, "iowait", 0.0)
        )
        if total <= 0:
            return None
        usage = min(1.0, max(0.0, (total - idle) / total))
        ncpu = psutil.cpu_count() or 1
        return CpuReading(usage, usage * ncpu, float(ncpu), 0.0, "psutil")

    def sample(self, now: float) -> float | None:
        reading = self.read(now)
        return None if reading is None else reading.usage


def disk_usage(path: str | os.PathLike[str]) -> float:
    """Used share (0..1) of the filesystem holding ``path``, as ``df`` counts it."""
    du = shutil.disk_usage(path)
    denominator = du.used + du.free
    return du.used / denominator if denominator else 0.0


class LoopLagProbe:
    """Measures event-loop lag: how late a ``clock.sleep(interval)`` wakes up.

    Run :meth:`run` as a background task; :meth:`take` returns the worst lag (seconds)
    seen since the previous call and starts a new window.
    """

    def __init__(self, *, interval: float = 0.25, clock: Clock | None = None) -> None:
        if not (isinstance(interval, (int, float)) and math.isfinite(interval) and interval > 0):
            from .errors import ValidationError

            raise ValidationError("loop_lag_interval", interval, "seconds > 0")
        self.interval = float(interval)
        self._clock = resolve_clock(clock)
        self._worst = 0.0
        self.last = 0.0
        self.samples = 0

    async def run(self) -> None:
        clock, interval = self._clock, self.interval
        while True:
            start = clock.monotonic()
            await clock.sleep(interval)
            lag = max(0.0, clock.monotonic() - start - interval)
            self.last = lag
            self.samples += 1
            if lag > self._worst:
                self._worst = lag

    def take(self) -> float:
        worst, self._worst = max(self._worst, self.last), 0.0
        return worst
