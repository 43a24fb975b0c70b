"""Table-driven reward cases, adversarial strings included, and the isolated worker pool."""

from __future__ import annotations

import time

import numpy as np
import pytest

from r1zero import rewards
from r1zero.rewards import Context, arith
from r1zero.rewards.basic import extract_answer, template_tail
from r1zero.rewards.isolated import IsolatedPool

R1_PROMPT = "... User: 2+2. Assistant:"
TINYZERO_PROMPT = "... Assistant: Let me solve this step by step.\n<think>"


def one(name, completion, example):
    return rewards.get(name)([completion], [example], Context())[0]


@pytest.mark.parametrize("prompt, completion, expected", [
    (R1_PROMPT, "<think>2 plus 2</think> <answer>4</answer>", 1.0),
    (R1_PROMPT, " <think>\nx\n</think>\n<answer>4</answer>\n", 1.0),
    (TINYZERO_PROMPT, " 2 plus 2 is 4</think> <answer>4</answer>", 1.0),  # the template opened <think>
    (R1_PROMPT, " 2 plus 2 is 4</think> <answer>4</answer>", 0.0),  # ... this one did not
    (R1_PROMPT, "<think></think><answer></answer>", 1.0),  # empty but well-formed (accuracy judges content)
    (R1_PROMPT, "", 0.0),
    (R1_PROMPT, "<answer>4</answer>", 0.0),
    (R1_PROMPT, "<think>a</think><answer>4</answer><answer>5</answer>", 0.0),  # repeated answer
    (R1_PROMPT, "<think>a</think><think>b</think><answer>4</answer>", 0.0),  # repeated think
    (R1_PROMPT, "<think>a<think>b</think></think><answer>4</answer>", 0.0),  # nested
    (R1_PROMPT, "<think>a <answer>4</answer></think><answer>4</answer>", 0.0),  # answer inside think
    (R1_PROMPT, "<think>a</think><answer>4</answer> so the answer is 5", 0.0),  # text outside the tags
    (R1_PROMPT, "The answer: <think>a</think><answer>4</answer>", 0.0),
    (R1_PROMPT, "<think>a</think><answer>4", 0.0),  # unclosed
    (R1_PROMPT, "＜think＞a＜/think＞＜answer＞4＜/answer＞", 0.0),  # full-width lookalike brackets
])
def test_format(prompt, completion, expected):
    assert one("format", completion, {"prompt": prompt}).value == expected


@pytest.mark.parametrize("completion,expected", [
    (" <think> 47*6=282 </think> <answer> 4042 </answer>", 1.0),
    (" <answer>4042</answer>", 1.0),
    (" <answer> 4041 </answer>", 0.0),
    (" 4042", 0.0),  # no tag: no answer
    (" <answer> 1 </answer> <answer> 4042 </answer>", 1.0),  # the last answer counts
    (" <answer> 4042 </answer> <answer> 1 </answer>", 0.0),
    (" <answer> 4042.0 </answer>", 0.0),  # exact, not numeric
])
def test_answer(completion, expected):
    assert one("answer", completion, {"answer": "4042"}).value == expected
    assert one("answer", completion, {}).value is None


def test_template_tail():
    assert template_tail(TINYZERO_PROMPT) == "<think>"
    assert template_tail(R1_PROMPT) == ""
    assert template_tail("<think> x </think> then") == ""


COUNTDOWN = {"numbers": [3, 5, 7], "target": 22}


@pytest.mark.parametrize("completion, expected", [
    ("<think>x</think><answer>3*5+7</answer>", 1.0),
    ("<answer>(7 + 5*3) </answer>", 1.0),
    ("<answer> 7+3*5 </answer>", 1.0),
    ("<answer>(3*5)+7</answer> trailing", 1.0),  # the equation decides; format is its own reward
    ("<answer>3+5+7</answer>", 0.1),  # wrong value
    ("<answer>3*5+7+0</answer>", 0.1),  # an extra number
    ("<answer>3*5*7</answer>", 0.1),
    ("<answer>5*3+7 = 22</answer>", 0.1),  # '=' is not arithmetic
    ("<answer>3 * 5 + 7; import os</answer>", 0.1),
    ("<answer>__import__('os')</answer>", 0.1),
    ("<answer>44**19**35</answer>", 0.1),  # power tower: rejected by the grammar
    ("<answer>" + "9" * 5000 + "</answer>", 0.1),  # huge literal
    ("<answer>" + "(" * 200 + "3*5+7" + ")" * 200 + "</answer>", 0.1),  # too deep
    ("<answer>3×5+7</answer>", 0.1),  # unicode times
    ("<answer>３*5+7</answer>", 0.1),  # full-width digit
    ("<answer>3*5−(−7)</answer>", 0.1),  # unicode minus
    ("<answer>7/0+3*5</answer>", 0.1),
    ("<answer></answer>", 0.1),
    ("3*5+7", 0.0),  # no answer tag
    ("", 0.0),
    ("<answer>1</answer><answer>3*5+7</answer>", 1.0),  # the last answer counts (TinyZero)
    ("<answer>3.0*5+7</answer>", 0.1),  # the numbers as given: not another way of writing them
    ("<answer>03*5+7</answer>", 0.1),
    ("<answer>3*5+7.</answer>", 0.1),
    ("<answer>" + "(" * 40 + "3*5+7" + ")" * 40 + "</answer>", 1.0),  # parenthesised, but it fits the length cap
    ("<answer>--3*5+7</answer>", 1.0),  # unary signs do not nest
])
def test_countdown(completion, expected):
    t0 = time.perf_counter()
    assert one("countdown", completion, COUNTDOWN).value == expected
    assert time.perf_counter() - t0 < 0.05  # adversarial inputs are rejected fast


def test_countdown_broken_example_is_could_not_score():
    s = one("countdown", "<answer>1+2</answer>", {"numbers": "abc", "target": 3})
    assert s.value is None and "broken example" in s.reason
    s = one("countdown", "<answer>3*5+7</answer>", {"numbers": [3.5, 5, 7], "target": 22})
    assert s.value is None and "3.5 is not an integer" in s.reason  # never truncated to 3
    for numbers in ([3.0, "5", 7], ["3", " 5", 7.0]):  # integers written as floats or text are fine
        assert one("countdown", "<answer>3*5+7</answer>", {"numbers": numbers, "target": "22"}).value == 1.0
    for target in (float("inf"), True, None):
        assert one("countdown", "<answer>3*5+7</answer>", {"numbers": [3, 5, 7], "target": target}).value is None


def test_answer_extraction_is_the_regex_in_one_pass():
    import random
    import re

    regex = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
    pieces = ["<answer>", "</answer>", "x", "7", "<answer", "answer>", "\n", "</", "<answer></answer>"]
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        found = regex.findall(text)
        assert extract_answer(text) == (found[-1] if found else None), text
    assert extract_answer("<answer>" * 200_000 + "1</answer>") == "<answer>" * 199_999 + "1"  # linear: 16k took 10 s
    assert extract_answer("<answer>" * 200_000) is None


def test_arith_is_exact_and_capped():
    assert arith.evaluate("1/3+1/3+1/3")[0] == 1  # exact fractions, no float rounding
    assert arith.evaluate("-(2-5)*4")[0] == 12
    for bad in ("2**3", "1e5", "abs(3)", "", "(", "1 2", "0x10", "9" * 13, "*".join(["999999999999"] * 30)):
        with pytest.raises(arith.ArithError):
            arith.evaluate(bad)


@pytest.mark.parametrize("completion, answer, expected", [
    ("<answer>42</answer>", "42", 1.0),
    ("<answer> 42. </answer>", "42", 1.0),
    ("<answer>1,000</answer>", "1000", 1.0),
    ("<answer>$0.5$</answer>", "\\frac{1}{2}", 1.0),
    ("<answer>\\dfrac{6}{4}</answer>", "3/2", 1.0),
    ("<answer>-\\frac{1}{2}</answer>", "-0.5", 1.0),
    ("<answer>50\\%</answer>", "50", 1.0),
    ("<answer>\\text{12}</answer>", "12", 1.0),
    ("the answer is \\boxed{7}", "7", 1.0),
    ("\\boxed{\\frac{1}{3}} then \\boxed{\\frac{2}{6}}", "1/3", 1.0),  # the last box
    ("<answer>\\boxed{3}</answer>", "3", 1.0),
    ("<answer>41</answer>", "42", 0.0),
    ("the answer is 42", "42", 0.0),  # no <answer>, no \boxed: no fallback to the whole text
    ("<answer></answer>", "42", 0.0),
    ("<answer>42</answer> \\boxed{41}", "42", 1.0),  # <answer> wins over a box outside it
    ("<answer>" + "9" * 5000 + "</answer>", "42", 0.0),  # huge literal: decided without sympy
    ("<answer>(x+1)^2</answer>", "x^2+2x+1", 1.0),  # symbolic: in the isolated worker
    ("<answer>x^2+1</answer>", "x^2+2x+1", 0.0),
])
def test_math(completion, answer, expected):
    assert one("math", completion, {"answer": answer}).value == expected


def test_math_broken_gold_is_could_not_score():
    s = one("math", "<answer>3</answer>", {"answer": "  "})
    assert s.value is None and "broken gold" in s.reason


def test_weighted_sum_and_could_not_score():
    comps = ["<think>a</think><answer>3*5+7</answer>", "<answer>1</answer>", "<answer>3*5+7</answer>"]
    exs = [dict(COUNTDOWN, prompt=""), dict(COUNTDOWN, prompt=""), {"prompt": "", "numbers": None}]
    s = rewards.score(comps, exs, {"countdown": 1.0, "format": 0.5})
    np.testing.assert_allclose(s.total, [1.5, 0.1, 0.0])
    assert list(s.valid) == [True, True, False] and s.reasons[2].startswith("countdown: broken example")
    assert np.isnan(s.parts["countdown"][2]) and s.parts["format"][0] == 1.0
    with pytest.raises(ValueError, match="unknown reward 'acc'"):
        rewards.score(comps, exs, {"acc": 1.0})


def test_measured_rewards_change_neither_total_nor_validity():
    comps = ["<think>a</think><answer>3*5+7</answer>", "<answer>1</answer>", "<answer>3*5+7</answer>"]
    exs = [dict(COUNTDOWN, prompt=""), dict(COUNTDOWN, prompt=""), {"prompt": "", "numbers": None}]
    plain = rewards.score(comps, exs, {"format": 0.5})
    measured = rewards.score(comps, exs, {"format": 0.5}, measure=("countdown", "format"))
    np.testing.assert_array_equal(measured.total, plain.total)  # row 2 cannot be scored by countdown,
    assert list(measured.valid) == [True, True, True]  # but countdown is only measured
    assert list(measured.parts) == ["format", "countdown"] and measured.parts["countdown"][0] == 1.0
    assert list(rewards.passed(measured.parts["countdown"])) == [True, False, False]  # 0.1 and NaN fail


def test_scored_take_and_concat():
    comps = ["<think>a</think><answer>3*5+7</answer>", "<answer>1</answer>", "<answer>3*5+7</answer>"]
    exs = [dict(COUNTDOWN, prompt=""), dict(COUNTDOWN, prompt=""), {"prompt": "", "numbers": None}]
    s = rewards.score(comps, exs, {"countdown": 1.0, "format": 0.5})
    picked = s.take(np.asarray([2, 0]))
    np.testing.assert_array_equal(picked.total, [0.0, 1.5])
    assert list(picked.valid) == [False, True] and picked.reasons[0].startswith("countdown")
    joined = rewards.Scored.concat([picked, s])
    np.testing.assert_array_equal(joined.parts["format"], [0.0, 1.0, 1.0, 0.0, 0.0])
    assert joined.reasons == picked.reasons + s.reasons and len(joined.total) == 5


def test_random_reward_ignores_correctness_and_is_seeded():
    comps, exs = ["a", "b", "c", "d"] * 8, [{}] * 32
    a = [s.value for s in rewards.get("random")(comps, exs, Context(seed=1, step=3))]
    b = [s.value for s in rewards.get("random")(comps, exs, Context(seed=1, step=3))]
    c = [s.value for s in rewards.get("random")(comps, exs, Context(seed=1, step=4))]
    assert a == b and a != c and set(a) == {0.0, 1.0}


def test_isolated_pool_kills_hung_and_greedy_workers():
    with IsolatedPool("time:sleep", workers=2, timeout_s=1.0) as pool:
        t0 = time.perf_counter()
        out = pool.map([(0.01,), (30,), (0.01,)])
        assert time.perf_counter() - t0 < 10
        assert out[0] == (True, None) and out[2] == (True, None)
        assert out[1][0] is False and "timeout" in out[1][1]
        assert pool.map([(0.0,)]) == [(True, None)]  # the replaced worker serves again
    with IsolatedPool("os:urandom", workers=1, timeout_s=10.0, memory_mb=512) as pool:
        ok, reason = pool.map([(2 * 2**30,)])[0]  # 2 GiB under a 512 MiB cap
        assert not ok and "MemoryError" in reason


def test_isolated_pool_bounds_a_batch_runs_tasks_in_parallel_and_respawns_dead_workers():
    import os
    import signal

    with IsolatedPool("time:sleep", workers=3, timeout_s=20.0, batch_timeout_s=2.0) as pool:
        t0 = time.perf_counter()
        out = pool.map([(0.01,)] + [(30,)] * 8)  # far more slow work than the batch budget
        assert time.perf_counter() - t0 < 10
        assert out[0] == (True, None)
        assert {reason.split(":")[0] for ok, reason in out[1:]} == {"stopped", "not run"}
        assert all(not ok and "budget ran out" in reason for ok, reason in out[1:])
        pool.batch_timeout_s, t0 = 30.0, time.perf_counter()
        assert pool.map([(1.0,)] * 6) == [(True, None)] * 6  # three at a time: ~2 s, not 6
        assert time.perf_counter() - t0 < 4.5
        for proc in pool._procs:  # killed while idle
            os.kill(proc.process.pid, signal.SIGKILL)
            proc.process.join(timeout=5)
        assert pool.map([(0.0,), (0.0,)]) == [(True, None)] * 2
