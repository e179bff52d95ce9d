"""How many CPU cores a training process can use now, judged by what the other processes used lately.

The pipeline runs its jobs side by side, one thread each; the longest one (RL-CycleGAN) outlives the
others by minutes and should then take the cores they free. Timing a short step on 1 and on N threads
(``train_loop.choose_threads``) cannot tell this reliably while the neighbours come and go: a probe that
falls in a neighbour's pause picks N threads, and N spin-waiting OpenMP threads beside a busy neighbour
ran the quick preset's RL-CycleGAN at 3.1 iterations/s instead of 8.7 (stop 26). The CPU time the rest of
the machine used over the last minute or so, from ``/proc/stat`` less this process's own, does not have
that blind spot.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FREE_CORE_MARGIN = 0.2
"""A core counts as free when the other processes used less than this fraction of it."""


def process_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_for(cores: int, others_busy: float) -> int:
    """Threads to run on ``cores`` when other processes keep ``others_busy`` cores busy: one per free core, at
    least one."""
    return max(1, min(cores, int(cores - others_busy + FREE_CORE_MARGIN)))


class OtherProcessesLoad:
    """The average number of cores that processes other than this one kept busy between two calls.

    Linux only (``/proc/stat``); elsewhere ``cores_busy`` returns ``None``.
    """

    def __init__(self, stat: Path = Path("/proc/stat")) -> None:
        self.stat = stat
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        """(seconds of CPU busy machine-wide, seconds of CPU used by this process, wall clock)."""
        try:
            ticks = [int(f) for f in self.stat.read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return busy, own.user + own.system, time.monotonic()

    def cores_busy(self) -> float | None:
        """Cores the others kept busy since the last call (or since construction)."""
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[2] <= last[2]:
            return None
        return max(0.0, ((now[0] - last[0]) - (now[1] - last[1])) / (now[2] - last[2]))
