"""kernel/sysinfo: the parsers on fixed texts of /proc files, and the probes on this machine."""

from __future__ import annotations

import os

import pytest

from kernel import sysinfo

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme sse2 avx512f avx512_bf16 amx_bf16

processor\t: 1
model name\t: Another CPU
flags\t\t: fpu
"""

STAT = "cpu  100 20 30 1000 50 5 6 7 0 0\ncpu0 50 10 15 500 25 2 3 3 0 0\n"


def test_cpuinfo_field_is_the_first_cpus():
    assert sysinfo.parse_cpuinfo_field(CPUINFO, "model name") == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert sysinfo.parse_cpuinfo_field(CPUINFO, "flags") == "fpu vme sse2 avx512f avx512_bf16 amx_bf16"
    assert sysinfo.parse_cpuinfo_field(CPUINFO, "bogomips") is None
    assert sysinfo.parse_cpuinfo_field("", "model name") is None


def test_meminfo_total():
    assert sysinfo.parse_meminfo_total("MemTotal:       24567890 kB\nMemFree: 1 kB\n") == "24567890 kB"
    assert sysinfo.parse_meminfo_total("MemFree: 1 kB\n") == "?"


def test_status_memory_figures():
    text = "Name:\tpython3\nVmRSS:\t   20480 kB\nRssAnon:\t   12288 kB\nRssFile:\t    8192 kB\nThreads:\t4\n"
    assert sysinfo.parse_status_kib(text) == {"VmRSS": 20480, "RssAnon": 12288, "RssFile": 8192}
    own = sysinfo.process_memory_kib(os.getpid())
    assert own["RssAnon"] > 0 and own["VmRSS"] >= own["RssAnon"]


def test_stat_busy_counts_user_nice_system_irq_softirq_steal():
    # user 100 + nice 20 + system 30 + irq 5 + softirq 6 + steal 7; idle 1000 and iowait 50 excluded
    assert sysinfo.parse_stat_busy(STAT, 100) == pytest.approx(1.68)
    assert sysinfo.parse_stat_busy("intr 1 2 3\n", 100) is None
    assert sysinfo.parse_stat_busy("cpu x y\n", 100) is None


def test_other_cores_subtracts_own_time():
    before = sysinfo.CpuSample(at=10.0, busy_s=100.0, own_s=5.0)
    after = sysinfo.CpuSample(at=12.0, busy_s=103.0, own_s=6.0)  # 3 s busy, 1 s of it ours, over 2 s
    assert sysinfo.other_cores(before, after) == pytest.approx(1.0)
    unread = sysinfo.CpuSample(at=12.0, busy_s=None, own_s=6.0)
    assert sysinfo.other_cores(before, unread) == 0.0
    assert sysinfo.other_cores(after, after) == 0.0
    ours_only = sysinfo.CpuSample(at=12.0, busy_s=101.0, own_s=7.0)  # clock granularity: never negative
    assert sysinfo.other_cores(before, ours_only) == 0.0


def test_probes_on_this_machine():
    assert sysinfo.cpu_count() == (os.cpu_count() or 1)
    assert sysinfo.cpu_model() != ""
    assert isinstance(sysinfo.native_bf16(), bool)
    assert sysinfo.memory_total().endswith(" kB")
    busy = sysinfo.busy_cpu_seconds()
    assert busy is not None and busy > 0
    assert len(sysinfo.load_average()) == 3
    facts = sysinfo.machine_facts()
    assert facts["nproc"] == os.cpu_count() and facts["kernel"] == os.uname().release


def test_own_cpu_seconds_grows_with_work():
    before = sysinfo.own_cpu_seconds()
    deadline = before + 0.05
    while sysinfo.own_cpu_seconds() < deadline:  # burn CPU until the counter moves (no timing asserted)
        sum(range(10_000))
    assert sysinfo.own_cpu_seconds(children=True) >= sysinfo.own_cpu_seconds() >= deadline


def test_other_load_is_throttled_and_non_negative():
    load = sysinfo.OtherLoad(every=3600.0)
    assert load.cores() == 0.0  # first look: nothing to compare with yet
    assert load.cores() == 0.0  # within `every`: the cached figure, no second read
    assert sysinfo.OtherLoad(every=0.0).cores() >= 0.0


def test_drop_caches_syncs_then_asks_for_all_three(tmp_path, monkeypatch):
    """On a stand-in /proc (dropping the real page cache would slow every other test on the machine)."""
    vm = tmp_path / "sys" / "vm"
    vm.mkdir(parents=True)
    (vm / "drop_caches").write_text("")
    calls = []
    monkeypatch.setattr(os, "sync", lambda: calls.append((vm / "drop_caches").read_text()))
    sysinfo.drop_caches(proc=tmp_path)
    assert calls == [""], "sync runs first, before the caches are dropped"
    assert (vm / "drop_caches").read_text() == "3\n"
    with pytest.raises(FileNotFoundError):
        sysinfo.drop_caches(proc=tmp_path / "absent")
