"""The host memory allocator of CPU runs: one that keeps freed memory for the next step.

On CPU every jitted program takes its temporary buffer from malloc at each call. glibc's malloc
maps any block over 32 MB afresh and unmaps it on free, and XLA's threads allocate from arenas that
do the same for whatever their heaps cannot hold, so each call faults its whole temporary buffer in
again, page by page (measured: ~790k page faults, 3.2 GB, per update of the 8x8 N=256 benchmark
point; the update 30% faster without them). The CLI therefore re-runs itself once, before anything is
imported, with an allocator that reuses freed memory: tcmalloc when the system has it
(`apt-get install libtcmalloc-minimal4`), else glibc's own malloc told to keep its memory (one
arena, no mapped blocks, no trimming). The process keeps its pid and its arguments.

Runs on a GPU or TPU keep the system's allocator (their buffers live on the device). Set
R1ZERO_ALLOCATOR=system to keep it on CPU too; a GLIBC_TUNABLES that sets glibc.malloc or an
LD_PRELOAD naming an allocator already chosen is left alone. A library user gets the same by
starting Python with the variables `allocator_env` returns.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import platform
import sys
from pathlib import Path

# glibc: every thread on the main arena (other arenas map big blocks whatever mmap_max says), no
# block mapped on its own, and freed memory never handed back (trim_threshold: 1 TB).
GLIBC_KEEP = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")
_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def allocator_env(environ: dict[str, str]) -> dict[str, str] | None:
    """The environment to re-run a CPU process with, or None to run it as it is."""
    if environ.get("R1ZERO_ALLOCATOR", "auto") != "auto":  # "system", or already chosen ("tcmalloc", "glibc")
        return None
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    if "glibc.malloc" in environ.get("GLIBC_TUNABLES", "") or any(
            name in environ.get("LD_PRELOAD", "") for name in _ALLOCATORS):
        return None
    if not _cpu_run(environ):
        return None
    env = dict(environ)
    tcmalloc = ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")
    if tcmalloc:
        env["LD_PRELOAD"] = ":".join(p for p in (tcmalloc, environ.get("LD_PRELOAD", "")) if p)
        env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))  # no line per block over 1 GB
        env["R1ZERO_ALLOCATOR"] = "tcmalloc"
    else:
        env["GLIBC_TUNABLES"] = ":".join(t for t in (GLIBC_KEEP, environ.get("GLIBC_TUNABLES", "")) if t)
        env["R1ZERO_ALLOCATOR"] = "glibc"
    return env


def _cpu_run(environ: dict[str, str]) -> bool:
    """Whether jax will run on the CPU: JAX_PLATFORMS says cpu first, or no accelerator plugin is
    installed (checked without importing jax)."""
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def reexec_with_allocator() -> None:
    """Replace this process by itself under `allocator_env`, when that says to and the process is
    the r1zero command (`r1zero ...` or `python -m r1zero ...`, not a notebook or an interpreter
    that called `cli.main`); else return."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or not (script.name == "r1zero" or script.parts[-2:] == ("r1zero", "__main__.py")):
        return
    env = allocator_env(dict(os.environ))
    if env is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError as e:  # run on as it is: slower on a CPU, never lost
        print(f"r1zero: could not re-run under the {env['R1ZERO_ALLOCATOR']} allocator ({e}); "
              f"running with the system's", file=sys.stderr)
