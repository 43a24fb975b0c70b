"""The code reward: extraction, scoring through the sandbox, HumanEval's own solutions, stdio cases,
could-not-run rows, and the code JSONL format's errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from r1zero import rewards
from r1zero.config import CodeConfig, TaskConfig
from r1zero.data import generators
from r1zero.errors import UserError
from r1zero.rewards import code
from r1zero.train import check_could_not_score

CONFIG = CodeConfig(workers=2, timeout_s=8.0, test_timeout_s=2.0)
CTX = rewards.Context(code=CONFIG)
ADD = {"id": "add", "kind": "function", "entry_point": "add", "context": "",
       "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0", "assert add(5, 5) == 10"]}
SUM = {"id": "sum", "kind": "stdio", "inputs": ["1 2\n", "10 20 30\n"], "outputs": ["3\n", "60"]}


def answer(code_text: str, lang: str = "python") -> str:
    return f"<think>easy</think><answer>```{lang}\n{code_text}```</answer>"


def test_extraction_modes():
    text = "```python\nx = 1\n```\n<answer>Here:\n```python\ndef f(): pass\n```\nand\n```py\ndef g(): pass\n```</answer>"
    assert code.extract_program(text, {}, "answer") == "def g(): pass\n"
    assert code.extract_program("<answer>def f(): return 1</answer>", {}, "answer") == "def f(): return 1"
    assert code.extract_program("```python\ndef f(): pass\n```", {}, "answer") is None  # no <answer>
    assert code.extract_program("```python\na\n```\ntext\n```\nb\n```", {}, "block") == "b\n"
    assert code.extract_program("no code", {}, "block") is None
    assert code.extract_program("Sure:\n```python\ndef f():\n    return 1\n# cut by the bud", {}, "block") == \
        "def f():\n    return 1\n# cut by the bud"  # no closed block: the cut-off one
    assert code.extract_program("```Python\nx = 1", {}, "block") == "x = 1"  # fences in any case, open or closed
    # function problems get their context (HumanEval's prompt, its helpers) first
    assert code.extract_program(answer("def f(): pass\n"), {"kind": "function", "context": "import math\n"},
                                "answer") == "import math\n\n\ndef f(): pass\n"


def test_extraction_is_linear_on_pathological_fences():
    text = "<answer>```" + " " * 65536 + "x" + "```\n" * 2000 + "</answer>"
    assert code.extract_program(text, {}, "answer") is not None


def test_scores_are_passed_fractions_and_stdio_compares_outside():
    comps = [answer("def add(a, b):\n    return a + b\n"), answer("def add(a, b):\n    return a + b if a > 0 else 7\n"),
             answer("import sys\nprint(sum(map(int, sys.stdin.read().split())))\n"),
             answer("import sys\nprint(sum(map(int, sys.stdin.read().split())), end='  \\n\\n')\n"),
             answer("print(3)\n"), "no answer at all"]
    exs = [ADD, ADD, SUM, SUM, SUM, ADD]
    values = [s.value for s in rewards.get("code")(comps, exs, CTX)]
    assert values == [1.0, 0.75, 1.0, 1.0, 0.5, 0.0]
    strict = rewards.get("code")(comps[:2], exs[:2], rewards.Context(code=CodeConfig(workers=2, partial_credit=False)))
    assert [s.value for s in strict] == [1.0, 0.0]
    assert rewards.passed(np.asarray(values)).tolist() == [True, False, True, True, False, False]


def test_a_long_right_stdio_output_is_not_cut():
    big = {"id": "big", "kind": "stdio", "inputs": [""], "outputs": ["\n".join(map(str, range(60000))) + "\n"]}
    scores = rewards.get("code")([answer("for i in range(60000):\n    print(i)\n")], [big], CTX)
    assert scores[0].value == 1.0, scores


def test_humaneval_canonical_solutions_all_pass_and_stubs_fail():
    rows = generators.humaneval(TaskConfig(dataset="humaneval"), 0)["test"]
    assert len(rows) == 164
    exs = [{**r["meta"], "id": r["id"]} for r in rows]
    scores = rewards.get("code")([answer(r["answer"]) for r in rows], exs, CTX)
    assert [r["id"] for r, s in zip(rows, scores) if s.value != 1.0] == []
    stubs = rewards.get("code")([answer(f"def {e['entry_point']}(*args):\n    raise ValueError\n") for e in exs], exs, CTX)
    assert all(s.value is not None and s.value < 1.0 for s in stubs)
    assert np.mean([s.value for s in stubs]) < 0.05


def test_could_not_run_is_none_and_masks_the_row(monkeypatch):
    box = code.sandbox(CONFIG)
    monkeypatch.setattr(box, "_command", lambda workdir: ["/nonexistent/bwrap"])
    scores = rewards.get("code")([answer("def add(a, b):\n    return a + b\n")], [ADD], CTX)
    assert scores[0].value is None and "could not run" in scores[0].reason
    scored = rewards.score([answer("x")], [ADD], {"code": 1.0}, CTX)
    assert not scored.valid[0]


def test_malformed_problems_are_could_not_score_naming_the_example():
    bad = {"id": "p7", "kind": "function", "entry_point": "not a name", "tests": ["assert True"]}
    scores = rewards.get("code")([answer("x = 1\n")] * 2, [bad, {"id": "q", "question": "1+1"}], CTX)
    assert scores[0].value is None and "p7" in scores[0].reason and "entry_point" in scores[0].reason
    assert scores[1].value is None and "not a code problem" in scores[1].reason


def test_a_run_stops_when_too_many_rows_could_not_be_scored():
    ok = rewards.Scored(np.zeros(4), np.array([True, True, True, False]), {}, ["", "", "", "code could not run: x"])
    check_could_not_score(ok, 0.25, rollout=3)
    with pytest.raises(UserError, match="rollout 3: 2 of 4 .*max_could_not_score=0.25.*could not run"):
        check_could_not_score(rewards.Scored(np.zeros(4), np.array([True, False, True, False]), {},
                                             ["", "code could not run: x", "", "code could not run: x"]), 0.25, 3)


def test_code_jsonl_reads_both_kinds_and_names_bad_lines(tmp_path):
    path = tmp_path / "problems.jsonl"
    rows = [{"prompt": "add", "entry_point": "add", "tests": ["assert add(1, 2) == 3"], "solution": "def add(a, b): ..."},
            {"id": "echo", "prompt": "echo", "inputs": ["a\n"], "outputs": ["a\n"]},
            {"prompt": "p3", "entry_point": "f", "tests": "def check(candidate):\n    assert candidate() == 1\n"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    splits = generators.code(TaskConfig(dataset="code", path=str(path), eval_size=1), 0)
    got = sorted(splits["train"] + splits["test"], key=lambda e: e["question"])
    assert [(e["id"], e["meta"]["kind"]) for e in got] == [("code-1", "function"), ("echo", "stdio"), ("code-3", "function")]
    for bad, message in (({"prompt": "x"}, "needs 'entry_point'"),
                         ({"prompt": "x", "entry_point": "f", "tests": []}, "'tests'"),
                         ({"prompt": "x", "inputs": ["1"], "outputs": []}, "'inputs' and 'outputs'"),
                         ({"prompt": "", "entry_point": "f", "tests": ["assert 1"]}, "'prompt'")):
        path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(UserError, match=f"problems.jsonl:2: .*{message}"):
            generators.code(TaskConfig(dataset="code", path=str(path), eval_size=1), 0)
