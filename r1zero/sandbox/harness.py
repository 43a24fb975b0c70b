"""The test harness: the first program inside the sandbox, loaded before any candidate code; stdlib only.

It reads one job (JSON) from stdin, drops to the sandbox uid (when started as root), sets the
resource limits, makes itself undumpable (no other process of the uid may read its memory or fds),
and prints on stdout, the one channel the trusted parent reads:

    START
    TEST <i> PASS | TEST <i> FAIL <reason as JSON>     (function tasks: one line per test)
    OUT <i> <JSON: stdout (base64), exit, timeout, truncated>    (stdio tasks: one line per case)
    LOG <JSON: the tail of the candidate's own output>
    END <token> <count>

Candidate code never runs in this process. Function tasks: the program runs in child.py, a fresh
interpreter, and the tests run here, calling the candidate through a proxy that sends arguments and
receives results as plain data (wire.py). Stdio tasks: the program runs once per case as its own
process; its output goes back to the parent, which alone holds the expected output. The random
token reaches only this process and is printed after the last test, so the parent knows every line
before it came from a harness that ran to the end.
"""

from __future__ import annotations

import ast
import base64
import builtins
import ctypes
import platform
import struct
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's directory out
import wire  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = "/tmp"
ENV = {"PATH": "/usr/bin:/bin", "HOME": WORK, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


class CandidateError(BaseException):
    """A call of the candidate that did not return: it timed out, died, or raised something that is
    not a builtin exception. A BaseException, so a test's `except Exception` cannot swallow it."""


def main() -> None:
    global WORK
    job = json.loads(sys.stdin.buffer.read())
    WORK = ENV["HOME"] = job["workdir"]
    if job.get("uid") is not None:
        os.setgroups([])
        os.setgid(job["uid"])
        os.setuid(job["uid"])
        if os.getuid() != job["uid"] or os.geteuid() != job["uid"]:
            fail("could not drop to the sandbox uid")
    set_limits(job["limits"])
    undumpable()
    prepare_files(job)
    seccomp()
    token = job["token"]
    emit("START")
    if job["kind"] == "function":
        count = run_function_tests(job)
    elif job["kind"] == "stdio":
        count = run_stdio_cases(job)
    else:
        fail(f"unknown kind {job['kind']!r}")
    emit("LOG " + json.dumps(log_tail()))
    emit(f"END {token} {count}")


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(reason: str) -> None:
    """The harness cannot run this job (bad tests, a broken sandbox): not the candidate's fault."""
    emit("ERROR " + json.dumps(reason[:500]))
    sys.exit(3)


def set_limits(limits: dict) -> None:
    cpu = int(limits["cpu_s"])
    for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_CPU", (cpu, cpu + 1)),
                        ("RLIMIT_AS", limits["memory_mb"] << 20), ("RLIMIT_FSIZE", limits["file_mb"] << 20),
                        ("RLIMIT_NOFILE", limits["open_files"]), ("RLIMIT_NPROC", limits["processes"])):
        soft, hard = value if isinstance(value, tuple) else (value, value)
        resource.setrlimit(getattr(resource, name), (soft, hard))


def undumpable() -> None:
    """PR_SET_DUMPABLE 0: processes of the same uid can no longer ptrace this one or open its
    /proc/<pid>/{mem,fd,environ}."""
    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:
        fail("prctl(PR_SET_DUMPABLE, 0) failed")


# Syscalls that reach memory or privileges the limits above do not bound, x86_64 numbers: new
# namespaces (a user namespace may mount an unbounded tmpfs), mounts, memfd and System V IPC (memory
# outside RLIMIT_AS), keyrings, bpf, io_uring, aio, userfaultfd, perf, ptrace; and new filesystem
# entries (tmpfs inodes are unbounded memory): mkdir, mknod, links, creat; open/openat with O_CREAT
# or O_TMPFILE are refused below, as are sockets other than AF_UNIX (TCP buffers are host memory).
DENIED_X86_64 = (272, 308, 165, 166, 155, 319, 447, 29, 30, 31, 67, 64, 65, 66, 220, 68, 69, 70, 71, 248, 249, 250,
                 321, 425, 426, 427, 206, 323, 298, 101, 428, 429, 430, 431, 432, 433, 442,
                 83, 258, 133, 259, 88, 266, 86, 265, 85)
ENOSYS_X86_64 = (435, 437)  # clone3 and openat2 read their flags from memory: libc falls back
CLONE_NEW_ANY = 0x7E020080  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME
CREATES = 0x400040  # O_CREAT | __O_TMPFILE
SYS_CLONE, SYS_OPEN, SYS_OPENAT, SYS_SOCKET, AF_UNIX = 56, 2, 257, 41, 1


def filter_program() -> list[tuple[int, int, int, int]]:
    """The classic BPF program of the seccomp filter, (code, jt, jf, k) per instruction."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    arg = lambda i: 16 + 8 * i  # offsetof(struct seccomp_data, args[i]) (low 32 bits)
    code = [(ld, 0, 0, 4), (jeq, 0, "kill", 0xC000003E), (ld, 0, 0, 0), (jge, "eperm", 0, 0x40000000)]
    code += [(jeq, "eperm", 0, nr) for nr in DENIED_X86_64]
    code += [(jeq, "enosys", 0, nr) for nr in ENOSYS_X86_64]
    code += [(jeq, "clone", 0, SYS_CLONE), (jeq, "open", 0, SYS_OPEN), (jeq, "openat", 0, SYS_OPENAT),
             (jeq, "socket", 0, SYS_SOCKET), (ret, 0, 0, 0x7FFF0000)]
    labels = {}
    for label, body in (("clone", [(ld, 0, 0, arg(0)), (jset, "eperm", 0, CLONE_NEW_ANY)]),
                        ("open", [(ld, 0, 0, arg(1)), (jset, "eperm", 0, CREATES)]),
                        ("openat", [(ld, 0, 0, arg(2)), (jset, "eperm", 0, CREATES)]),
                        ("socket", [(ld, 0, 0, arg(0)), (jeq, 0, "eperm", AF_UNIX)])):
        labels[label] = len(code)
        code += body + [(ret, 0, 0, 0x7FFF0000)]
    for label, k in (("eperm", 0x00050000 | 1), ("enosys", 0x00050000 | 38), ("kill", 0x80000000)):
        labels[label] = len(code)
        code.append((ret, 0, 0, k))
    jump = lambda target, i: labels[target] - i - 1 if isinstance(target, str) else target
    return [(c, jump(jt, i), jump(jf, i), k) for i, (c, jt, jf, k) in enumerate(code)]


def seccomp() -> None:
    """Installs filter_program over this process and everything it starts (any architecture but
    x86_64 is killed by it; on other machines only the rlimits apply, and the parent says so)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        fail("prctl(PR_SET_NO_NEW_PRIVS) failed")
    if platform.machine() != "x86_64":
        return
    prog = filter_program()
    buffer = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buffer))
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        fail(f"installing the seccomp filter failed (errno {ctypes.get_errno()})")


# ---------------------------------------------------------------------------------------------------
# Function tasks: tests here, the candidate in child.py.


ASSERTED = "__r1zero_asserted__"


class _CountAsserts(ast.NodeTransformer):
    """Every assert statement first calls ASSERTED(), so the harness knows which statements checked
    something (an assert inside a helper function counts where the helper is called)."""

    def visit_Assert(self, node: ast.Assert):
        call = ast.Expr(ast.Call(ast.Name(ASSERTED, ast.Load()), [], []))
        return [ast.copy_location(call, node), node]


def test_statements(tests) -> tuple[list, list, str | None]:
    """(setup code, [(statement, holds an assert)], the check function's parameter name or None).

    `tests` is a list of sources (each run as one statement, each a test) or one source: HumanEval's
    `def check(candidate)` (its body's top-level statements, in order) or plain statements.
    """
    def compiled(body: list, name: str):
        module = ast.fix_missing_locations(_CountAsserts().visit(ast.Module(body=body, type_ignores=[])))
        return compile(module, name, "exec")

    has_assert = lambda nodes: any(isinstance(n, ast.Assert) for node in nodes for n in ast.walk(node))
    if isinstance(tests, list):
        bodies = [ast.parse(t).body for t in tests]
        return [], [(compiled(b, f"<test {i}>"), True) for i, b in enumerate(bodies)], None
    module = ast.parse(tests)
    check = next((s for s in module.body if isinstance(s, ast.FunctionDef) and s.name == "check"), None)
    body = check.body if check else module.body
    setup = [s for s in module.body if s is not check] if check else []
    param = check.args.args[0].arg if check and check.args.args else None
    statements = [(compiled([s], "<test>"), has_assert([s]) and not isinstance(s, (ast.FunctionDef, ast.ClassDef)))
                  for s in body]
    return ([compiled(setup, "<test setup>")] if setup else []), statements, param


def builtin_exception(reply: dict) -> BaseException:
    """What the candidate raised, as a fresh builtin exception of the same name (a test may expect a
    ValueError), else a CandidateError."""
    message = str(reply["error"])[:300]
    cls = getattr(builtins, str(reply.get("type", "")), None)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, (StopIteration,
                                                                                       StopAsyncIteration)):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 (a builtin whose constructor wants other arguments)
            pass
    return CandidateError(message)


class Candidate:
    """Stands for the candidate's function in the tests: each call crosses to child.py and back."""

    def __init__(self, job: dict):
        self.program = job["program"]  # the task's context is already part of it (rewards/code.py)
        self.entry_point, self.broken, self.process = job["entry_point"], None, None
        self.deadline = None  # of the test now running
        self.calls = 0  # attempted, so far

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.broken:
            raise CandidateError(self.broken)
        try:
            request = {"args": wire.encode(list(args)), "kwargs": wire.encode(kwargs)}
        except wire.WireError as e:  # the problem's fault, not the program's
            fail(f"a test passes arguments that are not plain data: {e}")
        if self.process is None:
            self._start()
        try:
            wire.send(self.process.stdin.fileno(), request, self.deadline)
            reply = wire.recv(self.process.stdout.fileno(), self.deadline)
            if "error" in reply:
                raise builtin_exception(reply)
            return wire.decode(reply["value"])
        except TimeoutError:
            self.stop()
            raise CandidateError("timed out") from None
        except (wire.WireError, OSError, KeyError) as e:
            code = self.stop()
            raise CandidateError(f"the candidate's process failed ({e}; exit code {code})") from None

    def _start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-I", "-S", "-B", os.path.join(HERE, "child.py")],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        cwd=WORK, env=ENV, start_new_session=True)
        try:
            wire.send(self.process.stdin.fileno(), {"program": self.program, "entry_point": self.entry_point},
                      self.deadline)
            ready = wire.recv(self.process.stdout.fileno(), self.deadline)
        except TimeoutError:  # loading it again for the next test would time out again
            self.broken = "timed out while loading the program"
            self.stop()
            raise CandidateError(self.broken) from None
        except (wire.WireError, OSError) as e:
            self.broken = f"the program's process failed while loading ({e}; exit code {self.stop()})"
            raise CandidateError(self.broken) from None
        if not ready.get("ready"):
            self.broken = f"the program did not load: {str(ready.get('error'))[:300]}"
            self.stop()
            raise CandidateError(self.broken)

    def stop(self) -> int | None:
        """Kills the candidate's process and whatever it started; its exit code."""
        if self.process is None:
            return None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except OSError:
            pass
        code = self.process.wait()
        self.process = None
        return code


def run_function_tests(job: dict) -> int:
    """Runs the test statements in order. A statement is a test when the function was called since
    the previous test and the statement holds an assert (whatever the program does, so the count is
    the same for every program), or an assert ran in it (a helper that asserts) or it raised:
    `r = f(2)` then `assert r == 4` is one test; HumanEval's `assert True` is none."""
    try:
        setup, statements, param = test_statements(job["tests"])
    except SyntaxError as e:
        fail(f"the tests do not parse: {e}")
    asserted = [0]
    namespace = {"__name__": "__tests__", ASSERTED: lambda: asserted.__setitem__(0, asserted[0] + 1)}
    try:
        exec(compile(job["context"], "<context>", "exec"), namespace)
        for code in setup:
            exec(code, namespace)
    except BaseException as e:  # noqa: BLE001
        fail(f"the task's own code failed: {type(e).__name__}: {e}")
    candidate = Candidate(job)
    namespace[job["entry_point"]] = candidate
    if param:
        namespace[param] = candidate
    count, calls_before = 0, 0
    for code, holds_assert in statements:
        candidate.deadline = time.monotonic() + job["test_timeout_s"]
        asserts_before, failure = asserted[0], None
        try:
            exec(code, namespace)
        except CandidateError as e:
            failure = str(e)[:300]
        except AssertionError:
            failure = "assertion failed"
        except BaseException as e:  # noqa: BLE001 (the test's own code raised on the candidate's output)
            failure = f"{type(e).__name__}: {str(e)[:200]}"
        if (holds_assert or asserted[0] > asserts_before or failure) and candidate.calls > calls_before:
            emit(f"TEST {count} " + ("PASS" if failure is None else "FAIL " + json.dumps(failure)))
            count, calls_before = count + 1, candidate.calls
    candidate.stop()
    if not count:
        fail("no test calls the function")
    return count


# ---------------------------------------------------------------------------------------------------
# Stdio tasks: the program as a process per case.


def prepare_files(job: dict) -> None:
    """The only files the sandbox will have: the candidate's log and a stdio program (the filter
    forbids creating any after this)."""
    with open(os.path.join(WORK, "candidate.log"), "w"):
        pass
    if job["kind"] == "stdio":
        with open(os.path.join(WORK, "main.py"), "w") as f:
            f.write(job["program"])


def run_stdio_cases(job: dict) -> int:
    path = os.path.join(WORK, "main.py")
    cap = job["case_output_bytes"]
    for i, stdin in enumerate(job["inputs"]):
        out, code, timed_out, truncated = run_capped([sys.executable, "-I", "-S", "-B", path], stdin.encode(),
                                                     job["test_timeout_s"], cap)
        emit(f"OUT {i} " + json.dumps({"stdout": base64.b64encode(out).decode(), "exit": code,
                                      "timeout": timed_out, "truncated": truncated}))
    return len(job["inputs"])


def run_capped(cmd: list[str], stdin: bytes, timeout_s: float, cap: int) -> tuple[bytes, int | None, bool, bool]:
    """(stdout up to `cap` bytes, exit code, timed out, truncated). The process group is killed at
    the timeout or as soon as the output passes the cap."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=WORK, env=ENV, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    out, timed_out, truncated, pending = b"", False, False, memoryview(stdin)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if pending:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        events = sel.select(left)
        done = False
        for key, _ in events:
            if key.fileobj is proc.stdout:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    done = True
                out += chunk
                if len(out) > cap:
                    out, truncated, done = out[:cap], True, True
            else:
                try:
                    pending = pending[os.write(proc.stdin.fileno(), pending):]
                except BrokenPipeError:
                    pending = memoryview(b"")
                if not pending:
                    sel.unregister(proc.stdin)
                    proc.stdin.close()
        if done:
            break
    if not (timed_out or truncated):
        try:
            proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # closed its stdout but kept running
            timed_out = True
    try:  # the process, if still running, and anything it left in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    code = proc.wait()
    sel.close()
    return out, code, timed_out, truncated


def log_tail(n: int = 2000) -> str:
    try:
        with open(os.path.join(WORK, "candidate.log"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


if __name__ == "__main__":
    main()
