"""``rlcyclegan.cpu_cores``: free cores from what the other processes used."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlcyclegan.cpu_cores import OtherProcessesLoad, threads_for


@pytest.mark.parametrize(("cores", "others_busy", "threads"), [
    (2, 0.0, 2), (2, 0.1, 2), (2, 0.3, 1), (2, 1.0, 1), (2, 2.0, 1), (4, 1.0, 3), (4, 2.5, 1), (1, 0.0, 1),
])
def test_one_thread_per_core_the_others_left_free(cores: int, others_busy: float, threads: int) -> None:
    assert threads_for(cores, others_busy) == threads


def _write_stat(path: Path, busy_ticks: int) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    path.write_text(f"cpu  {busy_ticks} 0 0 1000 0 0 0 0 0 0\ncpu0 {busy_ticks} 0 0 1000 0 0 0 0 0 0\n")


def _spin(cpu_seconds: float) -> None:
    start = sum(os.times()[:2])
    while sum(os.times()[:2]) - start < cpu_seconds:
        pass


def test_the_machine_s_busy_time_less_this_process_s_own(tmp_path: Path) -> None:
    stat, hz = tmp_path / "stat", os.sysconf("SC_CLK_TCK")
    _write_stat(stat, 0)
    load = OtherProcessesLoad(stat)
    time.sleep(0.5)
    _write_stat(stat, hz // 2)  # half a second of CPU while this process slept: one busy core
    assert 0.7 < load.cores_busy() <= 1.05
    _spin(0.4)
    _write_stat(stat, hz // 2 + int(0.4 * hz))  # the machine was busy, but with this process's own work
    assert load.cores_busy() < 0.3


def test_an_unreadable_stat_file_gives_no_answer(tmp_path: Path) -> None:
    assert OtherProcessesLoad(tmp_path / "missing").cores_busy() is None
    (tmp_path / "garbled").write_text("cpu  a b c\n")
    assert OtherProcessesLoad(tmp_path / "garbled").cores_busy() is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux only")
def test_a_busy_neighbour_counts_on_the_real_machine() -> None:
    load = OtherProcessesLoad()
    neighbour = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 1\nwhile time.time() < end: pass"])
    neighbour.wait()
    assert load.cores_busy() > 0.5
