"""Run every benchmark (benchmarks/bench_*.py) and print one table of figures and ratios.

Usage: python benchmarks/run.py [NAME ...]   (NAME: e.g. ping, send, tunnel)
Each bench module has ``measure() -> List[Result]``; it starts its own sshd and daemons.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list) -> int:
    # The one place the benchmarks reach the test harness (tests/support: sshd, daemons, the
    # session bus) and their own modules; each bench module is imported from here.
    sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
    from common import table

    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if names:
        modules = [m for m in modules if m[len("bench_") :] in names]
    results = []
    for name in modules:
        started = time.monotonic()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.extend(importlib.import_module(name).measure())
        print(f"  {name} took {time.monotonic() - started:.0f}s", file=sys.stderr)
    output = table(results)
    print(output)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "latest.md").write_text(output + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
