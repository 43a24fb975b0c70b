"""The candidate's process (function tasks), started by harness.py inside the sandbox; stdlib only.

A fresh interpreter (never a fork of the harness, so none of the harness's memory is here). It runs
the program once, then answers calls: arguments arrive as plain data, the entry point runs, the
result goes back as plain data. The tests and their expected values stay in the harness process.
Whatever this process does (lies about results, exits, patches builtins) stays in this process.
"""

from __future__ import annotations

import builtins
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's directory out
import wire  # noqa: E402


def main() -> None:
    # The channel to the harness moves off fds 0/1; the program's own prints go to a log file.
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open("candidate.log", os.O_WRONLY | os.O_TRUNC)  # made by the harness: no file can be created
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    job = wire.recv(requests)
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        exec(compile(job["program"], "<candidate>", "exec"), namespace)
        fn = namespace.get(job["entry_point"])
        if not callable(fn):
            raise NameError(f"the program defines no function {job['entry_point']!r}")
    except BaseException as e:  # noqa: BLE001 (SyntaxError, SystemExit, anything the program raises)
        wire.send(replies, {"ready": False, "error": _describe(e)})
        return
    wire.send(replies, {"ready": True})
    while True:
        request = wire.recv(requests)
        try:
            args, kwargs = wire.decode(request["args"]), wire.decode(request["kwargs"])
            reply = {"value": wire.encode(fn(*args, **kwargs))}
        except BaseException as e:  # noqa: BLE001
            reply = {"error": _describe(e), "type": _name(e)}
        sys.stdout.flush()
        wire.send(replies, reply)


def _name(e: BaseException) -> str:
    try:
        return str(type(e).__name__)
    except BaseException:  # noqa: BLE001
        return ""


def _describe(e: BaseException) -> str:
    try:
        return f"{type(e).__name__}: {str(e)[:200]}"
    except BaseException:  # noqa: BLE001 (an exception whose __str__ raises)
        return "an exception that cannot be printed"


if __name__ == "__main__":
    main()
