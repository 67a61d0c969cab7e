"""What every benchmark returns, and small helpers for measuring whole commands."""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple


@dataclass
class Result:
    """One figure measured side by side with its baseline in the same run."""

    name: str
    value: float
    unit: str
    target: str  # the target, in words: "<= 1.5x baseline", ">= 0.9x baseline", "<= 64"
    ok: bool
    baseline_name: Optional[str] = None
    baseline: Optional[float] = None

    @property
    def ratio(self) -> Optional[float]:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline


def median_seconds(run: Callable[[], None], repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def command_seconds(argv: Sequence[str], repeat: int = 30, **kwargs) -> float:
    """Median wall time of a whole command, process start to exit."""
    return median_seconds(
        lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kwargs), repeat
    )


def paired_command_seconds(
    first: Sequence[str], second: Sequence[str], pairs: int, warmup: int = 3, **kwargs
) -> Tuple[float, float]:
    """Median wall times of two whole commands run in turn, ``pairs`` times each: a drift in the
    machine's speed (other work on the shared cores) reaches both alike. Which goes first
    changes from pair to pair, so neither always runs just after the other."""
    times: Tuple[List[float], List[float]] = ([], [])
    argvs = (first, second)
    for index in range(warmup + pairs):
        for which in (0, 1) if index % 2 == 0 else (1, 0):
            start = time.perf_counter()
            subprocess.run(argvs[which], check=True, stdout=subprocess.DEVNULL, **kwargs)
            if index >= warmup:
                times[which].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process, the kernel's work too)."""
    import os

    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:8]]  # user nice system idle iowait irq softirq
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the peak resident set of a live process, in MiB (Linux)."""
    from support.load import peak_rss_kib  # the test harness's /proc probes

    return peak_rss_kib(pid) / 1024


def table(results: List[Result]) -> str:
    rows = ["| benchmark | rtun | baseline | ratio | target | ok |", "|---|---|---|---|---|---|"]
    for r in results:
        base = f"{r.baseline:.3g} {r.unit} ({r.baseline_name})" if r.baseline is not None else "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        rows.append(
            f"| {r.name} | {r.value:.3g} {r.unit} | {base} | {ratio} | {r.target} | "
            f"{'yes' if r.ok else 'NO'} |"
        )
    return "\n".join(rows)
