"""Worker processes for checks that may hang or blow up (symbolic math on model text).

Each worker runs one named function per task under an address-space limit; the parent enforces a
wall-clock timeout per task and a budget per batch from outside: a worker that does not answer in
time is killed and replaced, and its task comes back as a failure with the reason. The trainer
process never runs the check itself.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Sequence


def _worker(conn: Connection, target: str, memory_mb: int) -> None:
    import resource

    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    module, name = target.split(":")
    fn = getattr(importlib.import_module(module), name)
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            conn.send((True, fn(*task)))
        except BaseException as e:  # noqa: BLE001 (MemoryError, RecursionError, anything)
            conn.send((False, f"{type(e).__name__}: {str(e)[:200]}"))


class _Proc:
    def __init__(self, ctx, target: str, memory_mb: int):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, target, memory_mb), daemon=True)
        self.process.start()
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class IsolatedPool:
    """`map(args_list)` runs `target(*args)` (a "module:function") for each args in worker processes,
    several at once.

    Returns, per task in order, (True, result) or (False, reason) where reason is the exception,
    "timeout after Xs" for a task killed from outside, or the batch budget running out: a whole
    `map` call never takes much longer than `batch_timeout_s`, whatever its tasks do. A worker that
    died (even while idle, killed by the OS or a user) is replaced before it is given a task.
    """

    def __init__(self, target: str, workers: int = 2, timeout_s: float = 5.0, memory_mb: int = 2048,
                 batch_timeout_s: float = 60.0):
        self.target, self.timeout_s, self.memory_mb = target, timeout_s, memory_mb
        self.batch_timeout_s = batch_timeout_s
        self._ctx = mp.get_context("spawn")  # never fork a process that holds JAX's threads
        self._procs = [_Proc(self._ctx, target, memory_mb) for _ in range(workers)]

    def map(self, args_list: Sequence[tuple]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any] | None] = [None] * len(args_list)
        pending = list(range(len(args_list)))[::-1]
        busy: dict[int, tuple[int, float]] = {}  # proc index -> (task, deadline)
        budget_end = time.monotonic() + self.batch_timeout_s
        while pending or busy:
            if time.monotonic() >= budget_end:  # what is left fails, named; busy workers are replaced
                for task in pending:
                    results[task] = (False, f"not run: the batch's {self.batch_timeout_s}s budget ran out")
                for p, (task, _) in busy.items():
                    results[task] = (False, f"stopped: the batch's {self.batch_timeout_s}s budget ran out")
                    self._replace(p)
                break
            for p in range(len(self._procs)):
                if p not in busy and pending:
                    task = pending.pop()
                    self._send(p, args_list[task])
                    busy[p] = (task, time.monotonic() + self.timeout_s)
            ready = wait([self._procs[p].conn for p in busy], timeout=min(self._next_timeout(busy),
                                                                          max(0.0, budget_end - time.monotonic())))
            for p in list(busy):
                task, deadline = busy[p]
                proc = self._procs[p]
                if proc.conn in ready:
                    try:
                        results[task] = proc.conn.recv()
                    except (EOFError, OSError):  # the worker died (e.g. killed by the OS)
                        results[task] = (False, "worker died")
                        self._replace(p)
                    del busy[p]
                elif time.monotonic() >= deadline:
                    results[task] = (False, f"timeout after {self.timeout_s}s")
                    self._replace(p)
                    del busy[p]
        return results  # type: ignore[return-value]

    def _send(self, p: int, args: tuple) -> None:
        """Gives worker p a task; a worker that died since its last task is replaced first."""
        if not self._procs[p].process.is_alive():
            self._replace(p)
        try:
            self._procs[p].conn.send(args)
        except (BrokenPipeError, ConnectionError, EOFError, OSError):  # died just now
            self._replace(p)
            self._procs[p].conn.send(args)

    def _next_timeout(self, busy) -> float:
        return max(0.0, min(d for _, d in busy.values()) - time.monotonic()) if busy else 0.0

    def _replace(self, p: int) -> None:
        self._procs[p].kill()
        self._procs[p] = _Proc(self._ctx, self.target, self.memory_mb)

    def close(self) -> None:
        for proc in self._procs:
            try:
                proc.conn.send(None)
            except OSError:
                pass
            proc.kill()
        self._procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
