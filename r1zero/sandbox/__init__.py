"""Running model-written programs against tests, safely: bubblewrap namespaces, an unprivileged uid,
resource limits, a wall clock from outside, and a verdict the program cannot forge.

- `runner.py`: the trusted side (Sandbox: starts executions, a bounded pool, reads verdicts).
- `harness.py`, `child.py`, `wire.py`: what runs inside (stdlib only, copied to a private directory
  and bound read-only): the test harness, the candidate's own process, the plain-data codec.

Imports no JAX and no model code.
"""

from r1zero.sandbox.runner import Execution, Sandbox, SandboxUnavailable, Verdict

__all__ = ["Execution", "Sandbox", "SandboxUnavailable", "Verdict"]
