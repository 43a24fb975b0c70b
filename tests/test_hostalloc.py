"""The CPU allocator the CLI re-runs itself under (r1zero.hostalloc)."""

import os
import subprocess
import sys
import textwrap

import pytest

from r1zero import hostalloc


@pytest.fixture
def glibc_cpu(monkeypatch):
    """A Linux/glibc machine with no accelerator plugin and no tcmalloc, whatever this one has."""
    monkeypatch.setattr(hostalloc.sys, "platform", "linux")
    monkeypatch.setattr(hostalloc.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(hostalloc.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(hostalloc.ctypes.util, "find_library", lambda name: None)


def test_glibc_is_told_to_keep_its_memory_and_other_tunables_stay(glibc_cpu):
    env = hostalloc.allocator_env({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.rtld.nns=2"})
    assert env["GLIBC_TUNABLES"] == hostalloc.GLIBC_KEEP + ":glibc.rtld.nns=2"
    assert env["R1ZERO_ALLOCATOR"] == "glibc" and env["PATH"] == "/bin" and "LD_PRELOAD" not in env
    assert hostalloc.allocator_env(env) is None  # the re-run process does not re-run again


def test_tcmalloc_is_preloaded_when_the_system_has_it(glibc_cpu, monkeypatch):
    monkeypatch.setattr(hostalloc.ctypes.util, "find_library",
                        lambda name: "libtcmalloc_minimal.so.4" if name == "tcmalloc_minimal" else None)
    env = hostalloc.allocator_env({"LD_PRELOAD": "libfoo.so"})
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4:libfoo.so"
    assert env["R1ZERO_ALLOCATOR"] == "tcmalloc" and "GLIBC_TUNABLES" not in env
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40


@pytest.mark.parametrize("environ", [
    {"R1ZERO_ALLOCATOR": "system"},  # opted out
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},  # the user's own malloc settings
    {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},  # the user's own allocator
    {"JAX_PLATFORMS": "cuda"},  # not a CPU run
    {"JAX_PLATFORMS": "tpu,cpu"},
])
def test_left_alone(glibc_cpu, environ):
    assert hostalloc.allocator_env(environ) is None


def test_cpu_first_in_jax_platforms_is_a_cpu_run_even_with_a_plugin(glibc_cpu, monkeypatch):
    monkeypatch.setattr(hostalloc.importlib.util, "find_spec", lambda name: object() if name == "libtpu" else None)
    assert hostalloc.allocator_env({}) is None  # a TPU plugin and no JAX_PLATFORMS: the TPU's run
    assert hostalloc.allocator_env({"JAX_PLATFORMS": "cpu"})["R1ZERO_ALLOCATOR"] == "glibc"


def test_not_glibc_is_left_alone(monkeypatch):
    monkeypatch.setattr(hostalloc.platform, "libc_ver", lambda: ("", ""))
    assert hostalloc.allocator_env({}) is None


# Mallocs and frees a 256 MB block five times, writing every page, and prints the most page faults
# of an allocation after the first. (malloc itself, as XLA's buffers: numpy would ask for huge pages.)
FAULTS = textwrap.dedent("""
    import ctypes, resource
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    faults, n = [], 1 << 28
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(n)
        ctypes.memset(block, 1, n)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        libc.free(block)
    print(max(faults[1:]))
""")


def _faults(env: dict) -> int:
    return int(subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True,
                              check=True).stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux only")
def test_the_kept_memory_is_reused_without_faulting_it_in_again(glibc_cpu):
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    pages = (1 << 28) // os.sysconf("SC_PAGE_SIZE")
    assert _faults({**base, "R1ZERO_ALLOCATOR": "system"}) > pages // 2  # glibc maps each block afresh
    assert _faults(hostalloc.allocator_env({**base, "JAX_PLATFORMS": "cpu"})) < pages // 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux only")
def test_the_command_re_runs_itself_once_with_the_same_pid_and_arguments(tmp_path):
    # Every interpreter start prints its pid, the allocator variable and its arguments.
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\nprint('start', os.getpid(), os.environ.get('R1ZERO_ALLOCATOR'), sys.argv[1:], flush=True)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("R1ZERO_ALLOCATOR", "LD_PRELOAD", "GLIBC_TUNABLES")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "r1zero", "--help"], env=env, capture_output=True, text=True)
    starts = [line.split(" ", 3)[1:] for line in done.stdout.splitlines() if line.startswith("start ")]
    assert done.returncode == 0 and "usage: r1zero" in done.stdout
    assert len(starts) == 2, starts  # once as started, once re-run
    (pid, allocator, argv), (pid2, allocator2, argv2) = starts
    assert allocator == "None" and allocator2 in ("glibc", "tcmalloc") and pid2 == pid and argv2 == argv

    # An interpreter that calls the CLI's main itself (a notebook, python -c) is never replaced.
    code = "import sys; from r1zero.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and len([line for line in done.stdout.splitlines() if line.startswith("start ")]) == 1


def test_a_failed_re_run_goes_on_as_it_is(glibc_cpu, monkeypatch, capsys):
    def fail(*args):
        raise PermissionError("exec refused")

    monkeypatch.setattr(hostalloc.os, "execve", fail)
    monkeypatch.setattr(hostalloc.sys, "argv", ["/venv/bin/r1zero", "train"])
    monkeypatch.delenv("R1ZERO_ALLOCATOR", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    hostalloc.reexec_with_allocator()  # returns
    assert "could not re-run under the glibc allocator (exec refused)" in capsys.readouterr().err
