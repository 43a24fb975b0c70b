"""The code sandbox's cost: start-up overhead against a bare subprocess, and executions per second
of the pool for a trivial program and a 1-second (CPU-bound) one.

    python -m r1zero.bench.sandbox [--runs 30] [--jobs 32] [--workers 1,2,4]

Prints a table (medians of `--runs` sequential starts; throughput of `--jobs` function executions,
each a program plus three tests, through `Sandbox.run_many`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from r1zero.config import CodeConfig
from r1zero.sandbox import Sandbox
from r1zero.sandbox.runner import base_python

TESTS = ["assert f(1) == 2", "assert f(2) == 3", "assert f(-1) == 0"]
TRIVIAL = "def f(x):\n    return x + 1\n"
ONE_SECOND = ("import time\n_t = time.process_time()\nwhile time.process_time() - _t < 1.0:\n    pass\n"
              "def f(x):\n    return x + 1\n")


def job(program: str) -> dict:
    return {"kind": "function", "program": program, "context": "", "tests": TESTS, "entry_point": "f"}


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def startup(runs: int) -> list[tuple[str, float]]:
    python = base_python()
    bare = lambda: subprocess.run([python, "-I", "-S", "-B", "-c", "pass"], check=True)
    rows = [("bare subprocess (python -c pass)", median_ms(bare, runs))]
    with Sandbox(CodeConfig(workers=1)) as box:
        cmd = box._command("/tmp")
        cmd = cmd[:cmd.index("--") + 1] + [python, "-I", "-S", "-B", "-c", "pass"]
        rows.append(("bwrap + python -c pass", median_ms(lambda: subprocess.run(cmd, check=True, env={}), runs)))
        stdio = {"kind": "stdio", "program": "pass", "inputs": [""]}
        rows.append(("sandbox execution, stdio (harness + program)", median_ms(lambda: box.run(stdio), runs)))
        rows.append(("sandbox execution, function + 3 tests", median_ms(lambda: box.run(job(TRIVIAL)), runs)))
    return rows


def throughput(program: str, jobs: int, workers: int) -> float:
    with Sandbox(CodeConfig(workers=workers, test_timeout_s=10.0, cpu_s=20, batch_timeout_s=600)) as box:
        start = time.perf_counter()
        verdicts = box.run_many([job(program)] * jobs)
        seconds = time.perf_counter() - start
    if any(v.passed != 3 for v in verdicts):
        raise SystemExit(f"a benchmark execution failed: {next(v for v in verdicts if v.passed != 3)}")
    return jobs / seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--workers", default=f"1,2,{os.cpu_count()}")
    args = parser.parse_args(argv)
    print(f"# r1zero sandbox, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print("| start-up | median ms |\n|---|---|")
    for name, ms in startup(args.runs):
        print(f"| {name} | {ms:.1f} |")
    print("\n| workers | trivial program, executions/s | 1-second program, executions/s |\n|---|---|---|")
    for w in sorted({int(x) for x in args.workers.split(",")}):
        fast = throughput(TRIVIAL, args.jobs, w)
        slow = throughput(ONE_SECOND, max(2 * w, 4), w)
        print(f"| {w} | {fast:.1f} | {slow:.2f} |")


if __name__ == "__main__":
    main()
