"""Code rewards: the program a completion writes, run against its problem's tests in the sandbox.

A code example carries (beside id/question/answer):
- `kind`: "function" or "stdio";
- function problems: `entry_point` (the function's name), `tests` (HumanEval's `def check(candidate)`
  source, or a list of assert statements), optional `context` (code the program may use: HumanEval's
  prompt, with its helper functions);
- stdio problems: `inputs` and `outputs`, one string each per case. Expected outputs never enter the
  sandbox: the program's output comes back and is compared here (trailing whitespace ignored).

The value is the passed fraction (`code.partial_credit`, else 1 only when all pass); a program the
sandbox could not run at all is "could not score" (masked, counted), not 0. Programs run in
r1zero.sandbox, never in this process.
"""

from __future__ import annotations

import atexit
import re
import threading
from typing import Sequence

from r1zero.config import CodeConfig
from r1zero.rewards import Context, Score, register
from r1zero.rewards.basic import extract_answer

MAX_PROGRAM_CHARS = 65536
# An opening fence; possessive quantifiers, so a fence followed by a long run of spaces does not
# backtrack (quadratic).
_OPEN = r"```[ \t]*+(?:(?:python3?|py)[ \t]*+)?\r?\n"
FENCE = re.compile(_OPEN + r"(.*?)```", re.DOTALL | re.IGNORECASE)
OPEN_FENCE = re.compile(_OPEN, re.IGNORECASE)
_sandboxes: dict[CodeConfig, object] = {}
_lock = threading.Lock()


def last_block(text: str) -> str | None:
    """The content of the last ```python (or bare ```) fenced block; with no closed block, what
    follows an opening fence (a completion cut by the token budget mid-block); else None."""
    blocks = FENCE.findall(text)
    if blocks:
        return blocks[-1]
    opened = OPEN_FENCE.search(text)
    return text[opened.end():] if opened else None


def extract_program(completion: str, example: dict, mode: str) -> str | None:
    """The program to run, or None when the completion gives none.

    answer: the last fenced block inside the last <answer>...</answer>, or the whole answer;
    block: the last fenced block anywhere. Function problems get their `context` first, so the
    program can call its helpers (its own definitions come after and win).
    """
    if mode == "answer":
        answer = extract_answer(completion)
        code = None if answer is None else (last_block(answer) or answer)
    else:
        code = last_block(completion)
    if code is None or not code.strip():
        return None
    return (example.get("context", "") + "\n\n" + code) if example.get("kind") == "function" else code


def same_output(got: str, expected: str) -> bool:
    """Equal up to trailing whitespace on each line and trailing blank lines."""
    lines = lambda s: [line.rstrip() for line in s.rstrip().splitlines()]
    return lines(got) == lines(expected)


def job_for(program: str, example: dict) -> dict:
    """The sandbox job of `program` on `example`'s tests (the stdio outputs stay here)."""
    if example["kind"] == "function":
        return {"kind": "function", "program": program, "context": example.get("context", ""),
                "tests": example["tests"], "entry_point": example["entry_point"]}
    longest = max(len(out.encode()) for out in example["outputs"])
    return {"kind": "stdio", "program": program, "inputs": list(example["inputs"]),
            "case_output_bytes": 2 * longest + 1024}  # room for the right output, and then some


def problem_error(example: dict) -> str | None:
    """What makes `example` not a runnable code problem, or None."""
    kind = example.get("kind")
    if kind == "function":
        if not isinstance(example.get("entry_point"), str) or not example["entry_point"].isidentifier():
            return "no valid 'entry_point'"
        tests = example.get("tests")
        if not (isinstance(tests, str) and tests.strip()) and not (
                isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests)):
            return "'tests' must be test code or a non-empty list of asserts"
        return None
    if kind == "stdio":
        inputs, outputs = example.get("inputs"), example.get("outputs")
        if not (isinstance(inputs, list) and isinstance(outputs, list) and inputs and len(inputs) == len(outputs)
                and all(isinstance(x, str) for x in inputs + outputs)):
            return "'inputs' and 'outputs' must be equally long non-empty lists of text"
        return None
    return f"not a code problem (kind {kind!r}; expected 'function' or 'stdio')"


def sandbox(config: CodeConfig):
    """The shared sandbox pool for `config` (started, and probed, on first use)."""
    from r1zero.sandbox import Sandbox

    with _lock:
        if config not in _sandboxes:
            _sandboxes[config] = Sandbox(config)
            atexit.register(_sandboxes[config].close)
        return _sandboxes[config]


def score_verdict(verdict, example: dict, config: CodeConfig) -> Score:
    if verdict.status == "could_not_run":
        return Score(None, f"code could not run: {verdict.reason}")
    if verdict.status == "failed":
        return Score(0.0, verdict.reason)
    if example["kind"] == "stdio":
        ok = [not o["timeout"] and not o["truncated"] and o["exit"] == 0 and same_output(o["stdout"], want)
              for o, want in zip(verdict.outputs, example["outputs"])]
        passed, total = sum(ok), len(ok)
    else:
        passed, total = verdict.passed, verdict.total
    value = passed / total if config.partial_credit else float(passed == total)
    return Score(value, f"passed {passed}/{total}" + (f"; {verdict.reason}" if verdict.reason else ""))


@register("code")
def code_reward(completions: Sequence[str], examples: Sequence[dict], context: Context) -> list[Score]:
    """The passed fraction of the program's tests (see the module docstring)."""
    config = context.code
    out: list[Score | None] = []
    jobs, rows = [], []
    for i, (c, ex) in enumerate(zip(completions, examples)):
        error = problem_error(ex)
        program = None if error else extract_program(c, ex, config.extract)
        if error:
            out.append(Score(None, f"example {ex.get('id', i)}: {error}"))
        elif program is None:
            out.append(Score(0.0, "no program in the completion"))
        elif len(program) > MAX_PROGRAM_CHARS:
            out.append(Score(0.0, f"program over {MAX_PROGRAM_CHARS} characters"))
        else:
            out.append(None)
            jobs.append(job_for(program, ex))
            rows.append(i)
    if jobs:
        for i, verdict in zip(rows, sandbox(config).run_many(jobs)):
            out[i] = score_verdict(verdict, examples[i], config)
    return out  # type: ignore[return-value]
