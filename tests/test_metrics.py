"""Text statistics behind the emergence metrics, against counts written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from r1zero.metrics import is_step_by_step, reflective_rates, text_stats


@pytest.mark.parametrize("text,expected", [
    (" <answer> 4042 </answer>", False),
    (" <think> 47*6=282 47*80=3760 282+3760=4042 </think> <answer> 4042 </answer>", True),
    (" <think> 47*86=4042 </think> <answer> 4042 </answer>", False),  # one equation is not a working
    ("First, 47 times 6.\nThen add.\n<answer> 4042 </answer>", True),  # prose: two lines
    (" <think>\n</think>\n<answer> 1=1 2=2 </answer>", False),  # equations after <answer> do not count
    (" 60*1=80 80*30=140 80+140=220 check: 33*2=10", False),  # no answer reached: rambling, not working
    ("1+2=3\n3+4=7\nso \\boxed{7}", True),
])
def test_step_by_step(text, expected):
    assert is_step_by_step(text) == expected


def test_text_stats_matches_hand_counts():
    texts = [" <think> 1*2=2 2+3=5 </think> <answer> 5 </answer>",  # steps, correct
             " <answer> 7 </answer>",  # direct, wrong
             " <think> 1*2=2 wait, 2+3=5 </think> <answer> 6 </answer>",  # steps + reflective, wrong
             " <answer> 5 </answer>"]  # direct, correct
    lengths = np.asarray([20, 5, 25, 5])
    correct = np.asarray([True, False, False, True])
    formatted = np.asarray([True, False, True, False])
    s = text_stats(texts, lengths, correct, formatted, prefix="x/")
    assert s["x/accuracy"] == 0.5 and s["x/format"] == 0.5 and s["x/length"] == 13.75
    assert s["x/length_correct"] == 12.5 and s["x/length_incorrect"] == 15.0
    assert s["x/step_by_step"] == 0.5 and s["x/step_by_step_correct"] == 0.5 and s["x/step_by_step_incorrect"] == 0.5
    assert s["x/reflective"] == 0.25 and s["x/reflective_correct"] == 0.0 and s["x/reflective_incorrect"] == 0.5
    assert s["x/accuracy_step_by_step"] == 0.5 and s["x/accuracy_direct"] == 0.5
    none_right = text_stats(texts[1:3], lengths[1:3], correct[1:3], formatted[1:3])
    assert math.isnan(none_right["length_correct"])


def test_reflective_words_are_whole_words():
    rates = reflective_rates(["Wait, let me check.", "a waiter checks", "but"])
    assert rates["reflect/wait"] == pytest.approx(1 / 3) and rates["reflect/check"] == pytest.approx(1 / 3)
    assert rates["reflect/any"] == pytest.approx(2 / 3)


def test_logs_are_read_past_a_torn_last_line_but_not_a_bad_middle_one(tmp_path):
    import pytest

    from r1zero.errors import UserError
    from r1zero.metrics import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert [row["step"] for row in read_jsonl(path)] == [1, 2]
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(UserError, match="metrics.jsonl line 2: not a log row"):
        read_jsonl(path)
    path.write_text('{"step": 1}\n[1, 2]\n{"step": 3}\n')
    with pytest.raises(UserError, match="metrics.jsonl line 2: not a log row \\(not a JSON object\\)"):
        read_jsonl(path)
