"""Resource signals: cgroup v2/v1 files written by the test, psutil fallback, disk, lag."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backend_services.resources import (
    CpuSampler,
    LoopLagProbe,
    MemorySampler,
    disk_usage,
    find_cgroup,
    parse_cpu_max,
    parse_keyed,
    parse_limit,
)
from backend_services.testing import FakeClock

MiB = 1 << 20


def cgroup_v2(tmp_path: Path, rel: str = "", **files: str) -> tuple[Path, Path]:
    """A cgroup v2 tree under tmp_path (process in ``rel``) and a /proc/self/cgroup file."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory io\n")
    d = root / rel if rel else root
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup.controllers").write_text("cpu memory\n")
    for name, text in files.items():
        (d / name.replace("_", ".", 1)).write_text(text)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(f"0::/{rel}\n")
    return root, proc


def memory_stat(inactive_file: int) -> str:
    return f"anon 1000\nfile 5000\nactive_file 100\ninactive_file {inactive_file}\n"


class TestParsers:
    def test_parse_keyed_skips_junk(self) -> None:
        """Key-value lines become ints; malformed lines are ignored."""
        assert parse_keyed("a 1\nb x\nc 3 4\nd 5\n") == {"a": 1, "d": 5}

    def test_parse_limit(self) -> None:
        """'max', v1's huge 'unlimited' number and junk mean no limit."""
        assert parse_limit("max\n") is None
        assert parse_limit("9223372036854771712") is None
        assert parse_limit("junk") is None
        assert parse_limit("536870912\n") == 512 * MiB

    def test_parse_cpu_max(self) -> None:
        """'quota period' becomes cores; 'max' means no quota."""
        assert parse_cpu_max("200000 100000\n") == 2.0
        assert parse_cpu_max("50000 100000") == 0.5
        assert parse_cpu_max("max 100000") is None
        assert parse_cpu_max("") is None


class TestCgroupV2Memory:
    def test_working_set_against_memory_max(self, tmp_path: Path) -> None:
        """Usage = (memory.current - inactive_file) / memory.max."""
        root, proc = cgroup_v2(
            tmp_path,
            memory_current=str(600 * MiB),
            memory_stat=memory_stat(100 * MiB),
            memory_max=str(1000 * MiB),
            memory_high="max",
        )
        reading = MemorySampler(cgroup_root=root, proc_cgroup=proc, use_psutil=False).read()
        assert reading is not None
        assert reading.source == "cgroup2"
        assert reading.used_bytes == 500 * MiB
        assert reading.usage == pytest.approx(0.5)

    def test_memory_high_is_used_when_tighter(self, tmp_path: Path) -> None:
        """memory.high below memory.max is the limit that counts."""
        root, proc = cgroup_v2(
            tmp_path,
            "kubepods/pod1",
            memory_current=str(400 * MiB),
            memory_stat=memory_stat(0),
            memory_max=str(1000 * MiB),
            memory_high=str(500 * MiB),
        )
        sampler = MemorySampler(cgroup_root=root, proc_cgroup=proc, use_psutil=False)
        assert sampler.sample() == pytest.approx(0.8)

    def test_no_limit_falls_back_to_psutil(self, tmp_path: Path) -> None:
        """Without memory.max/high the machine's memory (psutil) is used."""
        root, proc = cgroup_v2(
            tmp_path, memory_current="1000", memory_stat=memory_stat(0), memory_max="max"
        )
        reading = MemorySampler(cgroup_root=root, proc_cgroup=proc).read()
        assert reading is not None
        assert reading.source == "psutil"
        assert 0.0 <= reading.usage <= 1.0
        assert MemorySampler(cgroup_root=root, proc_cgroup=proc, use_psutil=False).read() is None

    def test_cache_heavy_usage_is_not_counted(self, tmp_path: Path) -> None:
        """Inactive page cache larger than current clamps the working set at zero."""
        root, proc = cgroup_v2(
            tmp_path,
            memory_current=str(100 * MiB),
            memory_stat=memory_stat(200 * MiB),
            memory_max=str(1000 * MiB),
        )
        assert MemorySampler(cgroup_root=root, proc_cgroup=proc, use_psutil=False).sample() == 0.0


class TestCgroupV2Cpu:
    def test_usage_against_quota_by_deltas(self, tmp_path: Path) -> None:
        """0.5 CPU-seconds in 1 s against a 2-core quota is 0.25; the first read is a
        baseline."""
        root, proc = cgroup_v2(
            tmp_path,
            cpu_max="200000 100000\n",
            cpu_stat="usage_usec 1000000\nnr_periods 10\nnr_throttled 0\n",
        )
        sampler = CpuSampler(cgroup_root=root, proc_cgroup=proc, use_psutil=False)
        assert sampler.read(100.0) is None
        (root / "cpu.stat").write_text("usage_usec 1500000\nnr_periods 20\nnr_throttled 0\n")
        reading = sampler.read(101.0)
        assert reading is not None
        assert reading.source == "cgroup2"
        assert reading.cores_used == pytest.approx(0.5)
        assert reading.limit_cores == 2.0
        assert reading.usage == pytest.approx(0.25)

    def test_too_close_readings_keep_the_baseline(self, tmp_path: Path) -> None:
        """A read within MIN_CPU_INTERVAL of the baseline is skipped, not re-based."""
        root, proc = cgroup_v2(
            tmp_path, cpu_max="100000 100000", cpu_stat="usage_usec 0\nnr_periods 0\n"
        )
        sampler = CpuSampler(cgroup_root=root, proc_cgroup=proc, use_psutil=False)
        assert sampler.read(10.0) is None
        (root / "cpu.stat").write_text("usage_usec 10000\nnr_periods 1\n")
        assert sampler.read(10.01) is None
        (root / "cpu.stat").write_text("usage_usec 400000\nnr_periods 10\n")
        assert sampler.sample(11.0) == pytest.approx(0.4)

    def test_throttling_raises_the_signal(self, tmp_path: Path) -> None:
        """Throttled in 8 of 10 periods: the signal is 0.8 even at modest average use."""
        root, proc = cgroup_v2(
            tmp_path,
            cpu_max="100000 100000",
            cpu_stat="usage_usec 0\nnr_periods 0\nnr_throttled 0\n",
        )
        sampler = CpuSampler(cgroup_root=root, proc_cgroup=proc, use_psutil=False)
        sampler.read(0.0)
        (root / "cpu.stat").write_text("usage_usec 300000\nnr_periods 10\nnr_throttled 8\n")
        reading = sampler.read(1.0)
        assert reading is not None
        assert reading.throttled == pytest.approx(0.8)
        assert reading.usage == pytest.approx(0.8)

    def test_no_quota_uses_psutil(self, tmp_path: Path) -> None:
        """cpu.max 'max': system CPU from psutil (baseline first, then a value)."""
        root, proc = cgroup_v2(tmp_path, cpu_max="max 100000", cpu_stat="usage_usec 0\n")
        sampler = CpuSampler(cgroup_root=root, proc_cgroup=proc)
        assert sampler.read(0.0) is None
        assert sampler._prev_times is not None  # psutil baseline taken
        sum(i * i for i in range(20000))
        reading = sampler.read(1.0)
        assert reading is None or (reading.source == "psutil" and 0.0 <= reading.usage <= 1.0)


class TestCgroupV1:
    def test_v1_memory_and_cpu(self, tmp_path: Path) -> None:
        """v1: usage_in_bytes - total_inactive_file against limit_in_bytes; cpuacct.usage
        against cfs quota."""
        root = tmp_path / "cg"
        mem, cpu, acct = root / "memory", root / "cpu", root / "cpuacct"
        for d in (mem, cpu, acct):
            d.mkdir(parents=True)
        (mem / "memory.usage_in_bytes").write_text(str(300 * MiB))
        (mem / "memory.limit_in_bytes").write_text(str(400 * MiB))
        (mem / "memory.stat").write_text(f"total_inactive_file {100 * MiB}\n")
        (cpu / "cpu.cfs_quota_us").write_text("50000")
        (cpu / "cpu.cfs_period_us").write_text("100000")
        (cpu / "cpu.stat").write_text("nr_periods 0\nnr_throttled 0\n")
        (acct / "cpuacct.usage").write_text("0")
        proc = tmp_path / "proc_cgroup"
        proc.write_text("4:memory:/\n3:cpu:/\n2:cpuacct:/\n")
        paths = find_cgroup(root, proc)
        assert paths is not None
        assert paths.version == 1
        assert MemorySampler(cgroup_root=root, proc_cgroup=proc, use_psutil=False).sample() == (
            pytest.approx(0.5)
        )
        cpu_sampler = CpuSampler(cgroup_root=root, proc_cgroup=proc, use_psutil=False)
        cpu_sampler.read(0.0)
        (acct / "cpuacct.usage").write_text(str(250_000_000))
        assert cpu_sampler.sample(1.0) == pytest.approx(0.5)

    def test_nothing_found(self, tmp_path: Path) -> None:
        """No cgroup files at all: find_cgroup says None."""
        proc = tmp_path / "p"
        proc.write_text("")
        assert find_cgroup(tmp_path, proc) is None


class TestDiskAndLag:
    def test_disk_usage_is_a_fraction(self, tmp_path: Path) -> None:
        """The used share of the filesystem holding a path lies in 0..1."""
        assert 0.0 <= disk_usage(tmp_path) <= 1.0

    async def test_loop_lag_probe_measures_late_wakeups(self) -> None:
        """A clock whose sleeps wake 0.3 s late shows 0.3 s of lag; take() resets."""

        class LateClock(FakeClock):
            async def sleep(self, seconds: float) -> None:
                await super().sleep(seconds)
                self._now += 0.3

        clock = LateClock()
        probe = LoopLagProbe(interval=1.0, clock=clock)
        task = asyncio.create_task(probe.run())
        await clock.advance(0)
        await clock.advance(1.0)
        assert probe.samples >= 1
        assert probe.take() == pytest.approx(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def test_loop_lag_zero_on_punctual_clock(self) -> None:
        """A FakeClock wakes exactly on time: zero lag."""
        clock = FakeClock()
        probe = LoopLagProbe(interval=0.5, clock=clock)
        task = asyncio.create_task(probe.run())
        await clock.advance(5.0)
        assert probe.samples == 10
        assert probe.take() == 0.0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
